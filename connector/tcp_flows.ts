/**
 * The connector's TCP flows: a relay opens a stream starting with an `open` header; the
 * connector checks the service and its backend's circuit breaker, connects to the backend,
 * answers `opened` (or `refused`) on the stream, and pipes stream and socket.
 *
 * @module
 */
import { formatHostPort, type ServiceUrl } from "../shared/config/address.ts";
import type { Logger } from "../shared/log.ts";
import type { RefusedReason } from "../shared/protocol/control.ts";
import { encodeStreamHeader, StreamCode } from "../shared/protocol/stream_header.ts";
import type { FlowSession } from "../shared/flow_session.ts";
import {
  createStreamHeaderReader,
  type StreamHeaderReader,
  writeStreamHeader,
} from "../shared/stream_header_io.ts";
import { pipeStreamSocket, type TcpPipe } from "../shared/tcp_pipe.ts";
import {
  CIRCUIT_STATE_VALUE,
  type CircuitBreaker,
  createCircuitBreaker,
} from "./circuit_breaker.ts";
import { type FlowLimit, type FlowLimits, isOutOfFiles } from "./flow_limits.ts";
import type { ConnectorMetrics } from "./metrics.ts";
import { countFlow, type FlowLedger } from "../shared/flow_ledger.ts";
import type { FlowTracer } from "../shared/trace.ts";
import { backendFields, startBackendSpan } from "./flow_audit.ts";

/** Options for {@linkcode createConnectorTcpFlows}. */
export interface ConnectorTcpOptions {
  /** The current TCP backend of `service` (the service map may be reloaded). */
  backend(service: string): ServiceUrl | undefined;
  /** Services with a TCP backend at start: their breaker state is exported from the start. */
  services: string[];
  /** Whether the sandbox lets this process reach `url` (a reload may name a new backend). */
  permitted?(url: ServiceUrl): boolean;
  /** Circuit breaker thresholds, one breaker per backend. */
  circuit: { failures: number; reset_ms: number };
  /** A backend connect that takes longer fails (and counts as a breaker failure). */
  connectTimeoutMs: number;
  /** The IP address to connect to for a backend host (a name or an IP literal). */
  resolve(host: string): Promise<string>;
  /** The connector's flow budgets, shared with its UDP flows. */
  limits: FlowLimits;
  /** Counts and logs an open refused by `limit`; returns the refusal's message. */
  limitHit(limit: FlowLimit, agent: string | undefined, service: string): string;
  /** True while the connector drains: new flows are refused. */
  draining(): boolean;
  /**
   * Who a flow `session` opens for `service` is for, or why it may not open. On an
   * end-to-end session that is the agent its certificate names, if granted `service`; on a
   * relay connection it is the agent the relay names.
   * @default {(session, service, agent) => ({ agent })}
   */
  authorize?(
    session: FlowSession,
    service: string,
    agent: string | undefined,
  ): { agent: string | undefined } | { reason: RefusedReason; message: string };
  /**
   * Which end opens flow streams on `session`: the agent (client-initiated streams) on an
   * end-to-end session, the relay (server-initiated) on a relay connection.
   * @default {() => "server"}
   */
  opener?(session: FlowSession): "client" | "server";
  logger: Logger;
  metrics: ConnectorMetrics;
  /** The connector's flow ledger (audit records of TCP flows). */
  ledger: FlowLedger;
  tracer: FlowTracer;
}

/** The connector's TCP flows; the connector routes non-control stream events here. */
export interface ConnectorTcpFlows {
  readable(session: FlowSession, streamId: number): void;
  writable(session: FlowSession, streamId: number): void;
  /** The relay session ended: its flows' sockets are closed. */
  sessionDown(session: FlowSession): void;
  /** Live TCP flows (connecting and open). */
  count(): number;
  /** After a services reload: ends open flows whose service lost its TCP backend or moved. */
  endRemoved(): void;
  /** Ends `session`'s open flows to services that `granted` no longer lets it use. */
  endUngranted(session: FlowSession, granted: (service: string) => boolean): void;
}

type Entry =
  | { state: "header"; reader: StreamHeaderReader }
  | { state: "connecting" }
  | { state: "open"; pipe: TcpPipe; service: string; url: ServiceUrl }
  /** Refused: discarding until the relay's FIN. */
  | { state: "closing" };

const scratch = new Uint8Array(16_384);

/**
 * Creates the connector's TCP flow table and exports every breaker's state as
 * `ztna_connector_circuit_state{service}`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Registry } from "prom-client";
 * import { createLogger } from "../shared/log.ts";
 * import { createFlowLimits } from "./flow_limits.ts";
 * import { createConnectorMetrics } from "./metrics.ts";
 * import { createConnectorTcpFlows } from "./tcp_flows.ts";
 * import { createFlowLedger } from "../shared/flow_ledger.ts";
 * import { createFlowTracer } from "../shared/trace.ts";
 *
 * const registry = new Registry();
 * const tcp = createConnectorTcpFlows({
 *   backend: (service) =>
 *     service === "wiki" ? { protocol: "tcp", host: "127.0.0.1", port: 8080 } : undefined,
 *   services: ["wiki"],
 *   circuit: { failures: 5, reset_ms: 5000 },
 *   connectTimeoutMs: 5000,
 *   resolve: (host) => Promise.resolve(host),
 *   limits: createFlowLimits({ flowsPerAgent: 16, maxFlows: 64 }),
 *   limitHit: (limit, agent, service) => `${limit} reached for ${agent} on ${service}`,
 *   draining: () => false,
 *   logger: createLogger("connector", { level: "error" }),
 *   metrics: createConnectorMetrics(registry),
 *   ledger: createFlowLedger({ write() {} }), // audit records go nowhere here
 *   tracer: createFlowTracer("connector"),
 * });
 * // The relay link routes each session's non-control stream events here:
 * // onStreamReadable: (session, id) => tcp.readable(session, id)
 * assert.equal(tcp.count(), 0);
 * assert.match(await registry.metrics(), /^ztna_connector_circuit_state\{service="wiki"\} 0$/m);
 * ```
 */
export function createConnectorTcpFlows(options: ConnectorTcpOptions): ConnectorTcpFlows {
  const { circuit, connectTimeoutMs, logger, metrics } = options;
  const bySession = new Map<FlowSession, Map<number, Entry>>();
  const breakers = new Map<string, CircuitBreaker>();
  const breakerFor = (service: string): CircuitBreaker => {
    let breaker = breakers.get(service);
    if (breaker !== undefined) return breaker;
    metrics.circuitState.set({ service }, CIRCUIT_STATE_VALUE.closed);
    breaker = createCircuitBreaker({
      failures: circuit.failures,
      resetMs: circuit.reset_ms,
      onStateChange(from, to) {
        metrics.circuitState.set({ service }, CIRCUIT_STATE_VALUE[to]);
        const fields = { service, from, to };
        if (to === "open") logger.warn("circuit breaker state changed", fields);
        else logger.info("circuit breaker state changed", fields);
      },
    });
    breakers.set(service, breaker);
    return breaker;
  };
  for (const service of options.services) breakerFor(service);

  function refuse(
    session: FlowSession,
    streamId: number,
    reason: RefusedReason,
    message: string,
  ): void {
    const flows = bySession.get(session);
    const write = writeStreamHeader(session.conn, streamId, {
      type: "refused",
      reason,
      message,
    }, true);
    if (write === null || !write.done) {
      // Congested or gone: a reset reaches the agent just as promptly.
      session.conn.streamReset(streamId, StreamCode.GOING_AWAY);
      flows?.delete(streamId);
      return;
    }
    flows?.set(streamId, { state: "closing" });
    drain(session, streamId);
  }

  function drain(session: FlowSession, streamId: number): void {
    for (;;) {
      const result = session.conn.streamRead(streamId, scratch);
      if (result === null) return;
      if (result.fin) {
        bySession.get(session)?.delete(streamId);
        return;
      }
    }
  }

  async function open(
    session: FlowSession,
    streamId: number,
    service: string,
    announced: string | undefined,
    traceparent: string | undefined,
  ): Promise<void> {
    const flows = bySession.get(session)!;
    const decision = options.authorize?.(session, service, announced) ?? { agent: announced };
    const agent = "agent" in decision ? decision.agent : announced;
    const url = options.backend(service);
    const span = startBackendSpan(options.tracer, service, "tcp", agent, traceparent);
    const about = () => ({
      service,
      protocol: "tcp" as const,
      ...backendFields(agent, url === undefined ? undefined : formatHostPort(url), session.relay),
    });
    // Every refusal of this open: audited, the span ended with the reason, then answered.
    const no = (reason: RefusedReason, message: string) => {
      options.ledger.refused({ ...about(), reason, detail: message, ...span.logFields });
      span.end(reason);
      refuse(session, streamId, reason, message);
    };
    if ("reason" in decision) return no(decision.reason, decision.message);
    if (url === undefined) {
      return no("unknown_service", `${service} has no tcp backend here`);
    }
    if (options.draining()) return no("draining", "connector draining");
    if (options.permitted !== undefined && !options.permitted(url)) {
      metrics.backendErrors.inc({ reason: "not_permitted" });
      logger.warn("backend outside the sandbox: refusing flow", {
        service,
        backend: formatHostPort(url),
      });
      return no(
        "backend_error",
        `backend of ${service} is outside this connector's network permissions`,
      );
    }
    const breaker = breakerFor(service);
    if (!breaker.allow()) {
      metrics.backendErrors.inc({ reason: "circuit_open" });
      return no(
        "backend_error",
        `circuit open: ${service} backend failed repeatedly`,
      );
    }
    const limit = options.limits.acquire(agent);
    if (limit !== null) {
      return no("limit", options.limitHit(limit, agent, service));
    }
    flows.set(streamId, { state: "connecting" });
    let socket: Deno.TcpConn;
    try {
      socket = await connectWithTimeout(
        await options.resolve(url.host),
        url.port,
        connectTimeoutMs,
      );
    } catch (error) {
      options.limits.release(agent);
      const gone = bySession.get(session)?.get(streamId)?.state !== "connecting";
      if (isOutOfFiles(error)) {
        // Our own descriptor shortage says nothing about the backend: no breaker failure.
        const message = options.limitHit("open_files", agent, service);
        if (!gone) no("limit", message);
        return;
      }
      breaker.failure();
      metrics.backendErrors.inc({ reason: "connect_failed" });
      logger.warn("backend connect failed", {
        service,
        backend: formatHostPort(url),
        error,
      });
      if (gone) return;
      return no(
        "backend_error",
        `cannot connect to the ${service} backend: ${
          error instanceof Error ? error.message : String(error)
        }`.slice(0, 500),
      );
    }
    breaker.success();
    if (bySession.get(session)?.get(streamId)?.state !== "connecting" || session.conn.closed) {
      socket.close(); // the relay session went away meanwhile
      options.limits.release(agent);
      return;
    }
    socket.setNoDelay(true);
    metrics.flowsOpened.inc({ protocol: "tcp" });
    metrics.flowsActive.inc({ protocol: "tcp" });
    const entry = options.ledger.open({
      id: streamId,
      service,
      protocol: "tcp",
      fields: backendFields(agent, formatHostPort(url), session.relay),
      openFields: span.logFields,
    });
    span.end();
    logger.debug("tcp flow opened", { service, flow: streamId, ...span.logFields });
    const pipe = pipeStreamSocket({
      conn: session.conn,
      streamId,
      socket,
      prefix: encodeStreamHeader({ type: "opened", flow: streamId }),
      onEnd(end) {
        countFlow(entry, false, end.toStream, end.chunksToStream);
        countFlow(entry, true, end.toSocket, end.chunksToSocket);
        options.ledger.close(entry, end.reason);
        bySession.get(session)?.delete(streamId);
        options.limits.release(agent);
        metrics.flowsActive.dec({ protocol: "tcp" });
        // Broken chunk framing from the relay is a rejected input: counted and logged.
        const malformed = end.reason === "protocol_violation";
        if (malformed) metrics.drops.inc({ reason: "malformed_stream" });
        logger[malformed ? "warn" : "debug"]("tcp flow ended", {
          service,
          flow: streamId,
          reason: end.reason,
          to_backend: end.toSocket,
          from_backend: end.toStream,
        });
      },
    });
    flows.set(streamId, { state: "open", pipe, service, url });
    // Bytes the agent sent behind the header wait in quiche.
    pipe.readable();
  }

  return {
    readable(session, streamId) {
      let flows = bySession.get(session);
      if (flows === undefined) bySession.set(session, flows = new Map());
      let entry = flows.get(streamId);
      if (entry === undefined) {
        // Only the peer opens flow streams here: bidirectional ones of its side (stream 0 is
        // the control stream).
        const parity = (options.opener?.(session) ?? "server") === "server" ? 1 : 0;
        if (streamId % 4 !== parity || streamId === 0) {
          session.conn.streamReset(streamId, StreamCode.PROTOCOL_VIOLATION);
          return;
        }
        entry = { state: "header", reader: createStreamHeaderReader(session.conn, streamId) };
        flows.set(streamId, entry);
      }
      switch (entry.state) {
        case "header": {
          const read = entry.reader.read();
          if (read.kind === "pending") return;
          if (read.kind === "header" && read.header.type === "open" && !read.fin) {
            const { service, agent, traceparent } = read.header;
            open(session, streamId, service, agent, traceparent).catch((error) => {
              logger.error("tcp flow failed to open", { error });
              session.conn.streamReset(streamId, StreamCode.GOING_AWAY);
              bySession.get(session)?.delete(streamId);
            });
            return;
          }
          flows.delete(streamId);
          if (read.kind === "header" || read.kind === "invalid") {
            logger.warn("invalid tcp stream header from relay", { stream: streamId });
            session.conn.streamReset(streamId, StreamCode.PROTOCOL_VIOLATION);
          }
          return;
        }
        case "open":
          return entry.pipe.readable();
        case "closing":
          return drain(session, streamId);
        default:
          return;
      }
    },
    writable(session, streamId) {
      const entry = bySession.get(session)?.get(streamId);
      if (entry?.state === "open") entry.pipe.writable();
    },
    sessionDown(session) {
      const flows = bySession.get(session);
      bySession.delete(session);
      for (const entry of flows?.values() ?? []) {
        if (entry.state === "open") entry.pipe.abort(StreamCode.GOING_AWAY);
      }
    },
    endRemoved() {
      for (const flows of bySession.values()) {
        for (const entry of [...flows.values()]) {
          if (entry.state !== "open") continue;
          const now = options.backend(entry.service);
          if (now?.host === entry.url.host && now.port === entry.url.port) continue;
          logger.info("tcp flow closed: service removed", { service: entry.service });
          entry.pipe.abort(StreamCode.GOING_AWAY);
        }
      }
    },
    endUngranted(session, granted) {
      for (const entry of [...bySession.get(session)?.values() ?? []]) {
        if (entry.state !== "open" || granted(entry.service)) continue;
        logger.info("tcp flow closed: no longer granted", { service: entry.service });
        entry.pipe.abort(StreamCode.FORBIDDEN);
      }
    },
    count() {
      let n = 0;
      for (const flows of bySession.values()) {
        for (const entry of flows.values()) {
          if (entry.state === "open" || entry.state === "connecting") n++;
        }
      }
      return n;
    },
  };
}

/** Connects to `hostname` (an IP literal) and `port`, giving up after `ms`. */
async function connectWithTimeout(
  hostname: string,
  port: number,
  ms: number,
): Promise<Deno.TcpConn> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ hostname, port, transport: "tcp" });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`connect timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([connecting, timeout]);
  } catch (error) {
    // A connect that completes after the timeout must not leak its socket.
    connecting.then((late) => late.close(), () => {});
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
