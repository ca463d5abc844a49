/**
 * The agent's TCP forwards: each connection accepted on a `tcp://` listen address becomes
 * a new bidirectional stream on the relay session, starting with an `open` header. Once the
 * relay answers `opened`, stream and socket are piped; a `refused` answer (policy, unknown
 * service, backend down, open circuit) or a reset closes the local connection at once.
 *
 * @module
 */
import { bindAddress } from "../shared/bind_error.ts";
import { formatHostPort, type ServiceUrl } from "../shared/config/address.ts";
import type { Logger } from "../shared/log.ts";
import { StreamCode } from "../shared/protocol/stream_header.ts";
import type { FlowSession } from "../shared/flow_session.ts";
import type { RefusedReason } from "../shared/protocol/control.ts";
import type { SessionState } from "./sessions.ts";
import {
  createStreamHeaderReader,
  finishStream,
  type PendingWrite,
  type StreamHeaderReader,
  writeStreamHeader,
} from "../shared/stream_header_io.ts";
import { pipeStreamSocket, type TcpPipe } from "../shared/tcp_pipe.ts";
import type { AgentMetrics } from "./metrics.ts";
import { countFlow, type FlowLedger } from "../shared/flow_ledger.ts";
import type { FlowSpan, FlowTracer } from "../shared/trace.ts";
import { localFields, openRefused, startOpenSpan } from "./flow_audit.ts";

/** Options for {@linkcode startTcpForwards}. */
export interface TcpForwardOptions {
  /** The `tcp://` forwards of the config. */
  forwards: { listen: ServiceUrl; service: string }[];
  /** The end-to-end session that carries `service`, or why there is none yet. */
  session(service: string): SessionState;
  /**
   * A relay that has not answered an open in this time is given up on.
   * @default {10000}
   */
  openTimeoutMs?: number;
  /**
   * How long a connection accepted while there is no session waits for one.
   * @default {5000}
   */
  holdMs?: number;
  logger: Logger;
  metrics: AgentMetrics;
  /** The agent's flow ledger (audit records of TCP flows). */
  ledger: FlowLedger;
  tracer: FlowTracer;
}

/** The running TCP forwards; the agent routes non-control stream events here. */
export interface TcpForwards {
  /** Bound addresses, e.g. `tcp://127.0.0.1:8080`. */
  readonly listening: string[];
  readable(session: FlowSession, streamId: number): void;
  writable(session: FlowSession, streamId: number): void;
  /** The relay session ended: every flow on it is closed locally. */
  sessionDown(session: FlowSession): void;
  /** A session or a relay connection is up: connections held for one try again. */
  sessionUp(): void;
  /** No session for `service` could be opened: connections waiting for one are refused. */
  refuseWaiting(service: string, reason: RefusedReason, message: string): void;
  /** Live TCP flows (opening and open). */
  count(): number;
  /** Stops accepting; open flows keep running. */
  stopAccepting(): void;
  /** Ends every flow now. */
  closeAll(): void;
}

interface Flow {
  service: string;
  socket: Deno.TcpConn;
  state: "opening" | "open";
  header: PendingWrite;
  reader: StreamHeaderReader;
  pipe: TcpPipe | null;
  started: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** The local client's address. */
  local: string;
  /** The open's span, from the accept to the relay's answer. */
  span: FlowSpan;
}

interface SessionFlows {
  /** Next client-initiated bidirectional stream id (0 is the control stream). */
  next: number;
  flows: Map<number, Flow>;
}

/**
 * Binds every `tcp://` forward and starts accepting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Registry } from "prom-client";
 * import { createLogger } from "../shared/log.ts";
 * import { createFlowLedger } from "../shared/flow_ledger.ts";
 * import { createFlowTracer } from "../shared/trace.ts";
 * import { createAgentMetrics } from "./metrics.ts";
 * import { startTcpForwards } from "./tcp_forward.ts";
 *
 * const registry = new Registry();
 * const tcp = startTcpForwards({
 *   forwards: [{ listen: { protocol: "tcp", host: "127.0.0.1", port: 0 }, service: "wiki" }],
 *   session: () => "no_relay", // no relay connection yet: connections would be held
 *   logger: createLogger("agent", { level: "error" }),
 *   metrics: createAgentMetrics(registry),
 *   ledger: createFlowLedger({ write() {} }), // audit records go nowhere here
 *   tracer: createFlowTracer("agent"),
 * });
 * assert.match(tcp.listening[0], /^tcp:\/\/127\.0\.0\.1:\d+$/);
 * assert.equal(tcp.count(), 0);
 * tcp.stopAccepting();
 * ```
 */
export function startTcpForwards(options: TcpForwardOptions): TcpForwards {
  const { logger, metrics, ledger, openTimeoutMs = 10_000, holdMs = 5000 } = options;
  const bySession = new Map<FlowSession, SessionFlows>();
  /** Connections accepted while no session was up, oldest first, each with its expiry. */
  const held = new Map<Deno.TcpConn, { service: string; timer: ReturnType<typeof setTimeout> }>();
  const listeners = options.forwards.map(({ listen, service }) => ({
    service,
    listener: bindAddress(
      listen.host,
      listen.port,
      () => Deno.listen({ hostname: listen.host, port: listen.port, transport: "tcp" }),
    ),
  }));

  for (const { service, listener } of listeners) acceptLoop(service, listener);

  async function acceptLoop(service: string, listener: Deno.TcpListener): Promise<void> {
    for (;;) {
      let socket: Deno.TcpConn;
      try {
        socket = await listener.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) return; // listener closed
        logger.warn("tcp accept failed", { service, error });
        continue;
      }
      accept(service, socket);
    }
  }

  function accept(service: string, socket: Deno.TcpConn): void {
    const session = options.session(service);
    if (typeof session === "string") return hold(service, socket, session === "opening");
    socket.setNoDelay(true);
    let state = bySession.get(session);
    if (state === undefined) bySession.set(session, state = { next: 4, flows: new Map() });
    const streamId = state.next;
    state.next += 4;
    const remote = socket.remoteAddr as Deno.NetAddr;
    const local = formatHostPort({ host: remote.hostname, port: remote.port });
    const span = startOpenSpan(options.tracer, service, "tcp", local);
    const header = writeStreamHeader(session.conn, streamId, {
      type: "open",
      service,
      protocol: "tcp",
      ...(span.traceparent === undefined ? {} : { traceparent: span.traceparent }),
    });
    if (header === null) {
      span.end("stream refused");
      socket.close();
      return;
    }
    const flow: Flow = {
      service,
      socket,
      state: "opening",
      header,
      reader: createStreamHeaderReader(session.conn, streamId),
      pipe: null,
      started: performance.now(),
      local,
      span,
      timer: setTimeout(() =>
        session.conn.guard("tcp open timeout", () => {
          logger.warn("relay did not answer a tcp open in time", { service, ...span.logFields });
          openRefused(
            ledger,
            logger,
            span,
            {
              service,
              protocol: "tcp",
              local,
              relay: session.relay,
            },
            "timeout",
            "relay did not answer in time",
          );
          session.conn.streamReset(streamId, StreamCode.GOING_AWAY);
          end(session, streamId);
        }), openTimeoutMs),
    };
    state.flows.set(streamId, flow);
  }

  /** Forgets a flow and closes its socket (if the pipe has not already). */
  function end(session: FlowSession, streamId: number): void {
    const flow = bySession.get(session)?.flows.get(streamId);
    if (flow === undefined) return;
    bySession.get(session)!.flows.delete(streamId);
    clearTimeout(flow.timer);
    flow.span.end("abandoned"); // no-op once the answer ended it
    if (flow.pipe === null) {
      try {
        flow.socket.close();
      } catch {
        // Already closed.
      }
    }
  }

  function onAnswer(session: FlowSession, streamId: number, flow: Flow): void {
    const read = flow.reader.read();
    if (read.kind === "pending") return;
    if (read.kind !== "header" || read.header.type === "open") {
      // Reset (e.g. a congested relay refusing), FIN or garbage: no flow.
      if (read.kind === "header" || read.kind === "invalid") {
        session.conn.streamReset(streamId, StreamCode.PROTOCOL_VIOLATION);
      }
      metrics.flowRefusals.inc({ reason: read.kind === "reset" ? "reset" : "invalid_answer" });
      logger.warn("tcp flow failed to open", {
        service: flow.service,
        answer: read.kind,
        ...flow.span.logFields,
      });
      ledger.refused({
        service: flow.service,
        protocol: "tcp",
        ...localFields(flow.local, session.relay),
        reason: read.kind === "reset" ? "reset" : "invalid_answer",
        ...flow.span.logFields,
      });
      flow.span.end(read.kind);
      return end(session, streamId);
    }
    const answer = read.header;
    if (answer.type === "refused") {
      metrics.flowRefusals.inc({ reason: answer.reason });
      openRefused(
        ledger,
        logger,
        flow.span,
        {
          service: flow.service,
          protocol: "tcp",
          local: flow.local,
          relay: session.relay,
        },
        answer.reason,
        answer.message,
      );
      // Our FIN lets both sides forget the stream.
      finishStream(session.conn, streamId);
      return end(session, streamId);
    }
    clearTimeout(flow.timer);
    flow.state = "open";
    metrics.flowsOpened.inc({ protocol: "tcp" });
    metrics.flowsActive.inc({ protocol: "tcp" });
    metrics.flowSetup.observe((performance.now() - flow.started) / 1000);
    const entry = ledger.open({
      id: streamId,
      service: flow.service,
      protocol: "tcp",
      fields: localFields(flow.local, session.relay),
      openFields: flow.span.logFields,
    });
    flow.span.set({ "ztna.flow": streamId });
    flow.span.end();
    logger.debug("tcp flow opened", {
      service: flow.service,
      flow: streamId,
      ...flow.span.logFields,
    });
    flow.pipe = pipeStreamSocket({
      conn: session.conn,
      streamId,
      socket: flow.socket,
      streamFinished: read.fin,
      onEnd(result) {
        metrics.flowsActive.dec({ protocol: "tcp" });
        countFlow(entry, true, result.toStream, result.chunksToStream);
        countFlow(entry, false, result.toSocket, result.chunksToSocket);
        ledger.close(entry, result.reason);
        // Broken chunk framing from the relay is a rejected input: counted and logged.
        const malformed = result.reason === "protocol_violation";
        if (malformed) metrics.drops.inc({ reason: "malformed_stream" });
        logger[malformed ? "warn" : "debug"]("tcp flow ended", {
          service: flow.service,
          flow: streamId,
          reason: result.reason,
          to_relay: result.toStream,
          from_relay: result.toSocket,
        });
        end(session, streamId);
      },
    });
    flow.pipe.readable();
  }

  /**
   * Keeps a connection that came before the session (the agent's start, a reconnect) for up
   * to `holdMs` instead of closing it at once: a client then gets served, not an empty reply.
   */
  function hold(service: string, socket: Deno.TcpConn, opening: boolean): void {
    // A session being opened is waited for even without a hold: its open is bounded.
    const wait = opening ? Math.max(holdMs, openTimeoutMs) : holdMs;
    if (wait === 0 || held.size >= MAX_HELD) return refuseUnconnected(socket);
    const timer = setTimeout(() => {
      held.delete(socket);
      refuseUnconnected(socket);
    }, wait);
    held.set(socket, { service, timer });
  }

  function refuseUnconnected(socket: Deno.TcpConn, reason = "not_connected"): void {
    metrics.flowRefusals.inc({ reason });
    closeQuietly(socket);
  }

  function releaseHeld(run: (service: string, socket: Deno.TcpConn) => void): void {
    for (const [socket, { service, timer }] of [...held]) {
      clearTimeout(timer);
      held.delete(socket);
      run(service, socket);
    }
  }

  return {
    sessionUp: () => releaseHeld(accept),
    refuseWaiting(service, reason, message) {
      for (const [socket, waiting] of [...held]) {
        if (waiting.service !== service) continue;
        clearTimeout(waiting.timer);
        held.delete(socket);
        const remote = socket.remoteAddr as Deno.NetAddr;
        const local = formatHostPort({ host: remote.hostname, port: remote.port });
        openRefused(
          ledger,
          logger,
          null,
          { service, protocol: "tcp", local, relay: "" },
          reason,
          message,
        );
        refuseUnconnected(socket, reason);
      }
    },
    listening: listeners.map(({ listener }) =>
      `tcp://${
        formatHostPort({
          host: (listener.addr as Deno.NetAddr).hostname,
          port: (listener.addr as Deno.NetAddr).port,
        })
      }`
    ),
    readable(session, streamId) {
      const flow = bySession.get(session)?.flows.get(streamId);
      if (flow === undefined) return;
      if (flow.state === "opening") onAnswer(session, streamId, flow);
      else flow.pipe!.readable();
    },
    writable(session, streamId) {
      const flow = bySession.get(session)?.flows.get(streamId);
      if (flow === undefined) return;
      if (flow.state === "opening") flow.header.flush();
      else flow.pipe!.writable();
    },
    sessionDown(session) {
      for (const [streamId, flow] of [...bySession.get(session)?.flows ?? []]) {
        flow.pipe?.abort(StreamCode.GOING_AWAY);
        end(session, streamId);
      }
      bySession.delete(session);
    },
    count() {
      let n = 0;
      for (const { flows } of bySession.values()) n += flows.size;
      return n;
    },
    stopAccepting() {
      for (const { listener } of listeners) closeQuietly(listener);
      releaseHeld((_service, socket) => refuseUnconnected(socket));
    },
    closeAll() {
      for (const session of [...bySession.keys()]) this.sessionDown(session);
      releaseHeld((_service, socket) => refuseUnconnected(socket));
    },
  };
}

/** Connections held at once while no session is up; more are refused at once. */
const MAX_HELD = 256;

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}
