/**
 * The agent: binds each configured local listen address, and for every local client
 * (source address) opens a flow to the forward's service, then carries UDP payloads both
 * ways. Flows ride the end-to-end session to the service's connector (`sessions.ts`), which
 * the relay only forwards; an agent without a certificate has its flows carried by the relay.
 * Several local applications can share one listen port: each source address is its own flow.
 *
 * @module
 */
import { formatHostPort } from "../shared/config/address.ts";
import type { AgentConfig } from "../shared/config/mod.ts";
import { createFlowDatagrams, type FlowDatagrams } from "../shared/flow_datagrams.ts";
import { type Logger, rateLimitedLog } from "../shared/log.ts";
import { createBackoff } from "../shared/backoff.ts";
import type { ControlMessage } from "../shared/protocol/control.ts";
import type { HandlerErrorReporter, TlsMaterial } from "../shared/quic/mod.ts";
import { type FlowSession, type RelaySession, runRelayLink } from "../shared/relay_link.ts";
import { CloseCode } from "../shared/quic/mod.ts";
import { PROTOCOL_VERSION, type RefusedReason } from "../shared/protocol/control.ts";
import { createAgentSessions, type SessionState } from "./sessions.ts";
import type { FlowSessionHandlers } from "../shared/flow_session.ts";
import {
  openUdpSocket,
  type UdpSocket,
  type UdpTarget,
  udpTarget,
} from "../shared/quic/udp_socket.ts";
import type { AgentMetrics } from "./metrics.ts";
import { startTcpForwards } from "./tcp_forward.ts";
import type { AuditLog } from "../shared/audit_log.ts";
import { countFlow, createFlowLedger, type FlowEntry } from "../shared/flow_ledger.ts";
import type { FlowSpan, FlowTracer } from "../shared/trace.ts";
import { localFields, openRefused, startOpenSpan } from "./flow_audit.ts";

/** A relay or connector that has not opened a session in this time is given up on. */
const SESSION_OPEN_TIMEOUT_MS = 10_000;
/** Payloads held per client while its flow is being opened. */
const MAX_QUEUED = 64;
/** How long a refused client is refused locally before asking the relay again. */
const REFUSAL_HOLD_MS = 1000;

/** One local client of a forward (a source address on the listen socket). */
interface ClientFlow {
  key: string;
  forward: Forward;
  target: UdpTarget;
  /** Connector-assigned flow id once opened. */
  flow: number | null;
  request: number;
  /** The end-to-end session the flow is (being) opened on. */
  session: FlowSession | null;
  queue: Uint8Array[];
  openedAt: number;
  refusedUntil: number;
  lastActive: number;
  /** When the first payload held for a missing session arrived. */
  heldSince: number;
  /** The span of the open in progress, from the first packet to the relay's answer. */
  span: FlowSpan | null;
  /** The ledger entry while the flow is open. */
  entry: FlowEntry | null;
}

/** A bound forward: local socket plus the service it reaches. */
interface Forward {
  service: string;
  listen: string;
  socket: UdpSocket;
  clients: Map<string, ClientFlow>;
}

/** A running agent. */
export interface Agent {
  /** Bound local addresses, e.g. `udp://127.0.0.1:5353`, in the order of `forwards`. */
  readonly listening: string[];
  /** Each forward's service and bound address, in the order of `forwards`. */
  readonly forwards: { service: string; listen: string }[];
  /** True while connected to a relay. */
  isReady(): boolean;
  /** Live state for `/health`. */
  health(): Record<string, unknown>;
  /** Replaces the TLS material used for the next dials. */
  setTls(tls: TlsMaterial): void;
  /** Graceful shutdown: stop accepting local traffic, close flows, close the session. */
  drain(drainMs: number): Promise<void>;
}

/** What the agent needs besides its config. */
export interface AgentDeps {
  logger: Logger;
  metrics: AgentMetrics;
  tls: TlsMaterial;
  /** Told about exceptions from relay-connection handlers (each closes its connection). */
  onHandlerError?: HandlerErrorReporter;
  /** Called whenever a relay session comes up. */
  onConnected?: () => void;
  /** Where the agent's view of its flows goes (docs/AUDIT.md). */
  audit: AuditLog;
  /** Spans of flow setup. */
  tracer: FlowTracer;
}
/** Starts the agent described by `config`. */
export function startAgent(config: AgentConfig, deps: AgentDeps): Agent {
  const { logger, metrics } = deps;
  const ledger = createFlowLedger(deps.audit);
  let tls = deps.tls;
  const stop = new AbortController();
  /**
   * Flows ride end-to-end sessions to connectors, which need our certificate. An agent that
   * authenticates with a token alone has none: its flows ride the relay connection, and the
   * relay carries them itself (docs/SECURITY.md says what that costs).
   */
  const relayCarried = config.tls.cert === undefined;
  if (relayCarried) {
    logger.warn("no client certificate: flows ride the relay connection, not end-to-end sessions");
  }
  /** The relay connection (control: session opens, service announcements). */
  let session: RelaySession | null = null;
  /** Each end-to-end session's UDP flow framing. */
  const datagramsOf = new Map<FlowSession, FlowDatagrams>();
  let nextRequest = 1;
  let draining = false;
  const byRequest = new Map<number, ClientFlow>();
  const byFlow = new Map<number, ClientFlow>();
  const limitLog = rateLimitedLog(5000);
  /**
   * Services the current relay announced `service_down` for (no connector). New local flows
   * to them are dropped at once instead of costing an open round trip each, until
   * `service_up`. Per session: another relay may well have a connector.
   */
  const servicesDown = new Set<string>();

  const forwards: Forward[] = config.forwards
    .filter((f) => f.listen.protocol === "udp")
    .map(({ listen, service }) => {
      const forward: Forward = {
        service,
        listen: "",
        socket: undefined as unknown as UdpSocket,
        clients: new Map(),
      };
      forward.socket = openUdpSocket({
        host: listen.host,
        port: listen.port,
        onPacket: (data, from) => fromLocal(forward, data, from),
        onError(error, during) {
          limitLog(
            `socket:${service}`,
            (suppressed) =>
              logger.warn("local socket error", { service, during, error, suppressed }),
          );
        },
      });
      forward.listen = `udp://${
        formatHostPort({ host: forward.socket.addr.hostname, port: forward.socket.addr.port })
      }`;
      return forward;
    });

  function fromLocal(forward: Forward, data: Uint8Array, from: Deno.NetAddr): void {
    if (draining) {
      metrics.drops.inc({ reason: "draining" });
      return;
    }
    const key = `${from.hostname}|${from.port}`;
    const now = Date.now();
    let client = forward.clients.get(key);
    if (client === undefined) {
      client = {
        key,
        forward,
        target: udpTarget(from.hostname, from.port),
        flow: null,
        request: 0,
        session: null,
        queue: [],
        openedAt: 0,
        refusedUntil: 0,
        lastActive: now,
        heldSince: 0,
        span: null,
        entry: null,
      };
      forward.clients.set(key, client);
    }
    client.lastActive = now;
    const datagrams = client.session === null ? undefined : datagramsOf.get(client.session);
    if (client.flow !== null && datagrams !== undefined) {
      const dropped = datagrams.send(client.flow, data);
      if (dropped !== null) {
        metrics.drops.inc({ reason: dropped });
        return;
      }
      metrics.datagrams.inc({ direction: "to_relay" });
      metrics.bytes.inc({ direction: "to_relay" }, data.length);
      if (client.entry !== null) countFlow(client.entry, true, data.length);
      return;
    }
    if (client.refusedUntil > now) {
      metrics.drops.inc({ reason: "refused" });
      return;
    }
    if (servicesDown.has(forward.service)) {
      metrics.drops.inc({ reason: "service_down" });
      return;
    }
    if (client.queue.length >= MAX_QUEUED) {
      metrics.drops.inc({ reason: "open_queue_full" });
      return;
    }
    // The open's trace starts with the first packet that needs it, held or not.
    client.span ??= startOpenSpan(deps.tracer, forward.service, "udp", localOf(client));
    const carrier = sessionFor(forward.service, client.span.traceparent);
    if (typeof carrier === "string") {
      // Held while the session opens, or for the relay (start-up, reconnect) for up to
      // connect_hold_ms; see the sweeper.
      if (carrier === "no_relay" && config.connect_hold_ms === 0) {
        metrics.drops.inc({ reason: "not_connected" });
        return;
      }
      if (client.queue.length === 0) client.heldSince = now;
      client.queue.push(data.slice());
      return;
    }
    client.queue.push(data.slice());
    if (client.request === 0 || client.session !== carrier) requestFlow(client, carrier);
  }

  function requestFlow(client: ClientFlow, current: FlowSession): void {
    client.request = nextRequest++;
    client.session = current;
    client.flow = null;
    client.openedAt = performance.now();
    byRequest.set(client.request, client);
    const traceparent = client.span?.traceparent;
    current.send({
      type: "open",
      id: client.request,
      service: client.forward.service,
      protocol: "udp",
      ...(traceparent === undefined ? {} : { traceparent }),
    });
  }

  /** A control message from a connector, on end-to-end session `from`. */
  function onControl(from: FlowSession, message: ControlMessage): void {
    const datagrams = datagramsOf.get(from);
    switch (message.type) {
      case "opened": {
        const client = byRequest.get(message.id);
        if (client === undefined || client.session !== from) return;
        // In a session the flow id is our request id, so ids are unique across sessions
        // and one connector cannot take over another's flow (docs/PROTOCOL.md §7).
        if (!relayCarried && message.flow !== message.id) {
          metrics.drops.inc({ reason: "malformed" });
          from.conn.close(CloseCode.PROTOCOL_VIOLATION, "opened with a flow id of its own");
          return;
        }
        byRequest.delete(message.id);
        client.flow = message.flow;
        byFlow.set(message.flow, client);
        datagrams?.limitFlow(message.flow, message.max_datagram);
        metrics.flowsOpened.inc({ protocol: "udp" });
        metrics.flowsActive.inc({ protocol: "udp" });
        metrics.flowSetup.observe((performance.now() - client.openedAt) / 1000);
        const traced = client.span?.logFields ?? {};
        client.entry = ledger.open({
          id: message.flow,
          service: client.forward.service,
          protocol: "udp",
          fields: localFields(localOf(client), client.session?.relay),
          openFields: traced,
        });
        client.span?.set({ "ztna.flow": message.flow });
        client.span?.end();
        client.span = null;
        logger.debug("flow opened", {
          service: client.forward.service,
          flow: message.flow,
          ...traced,
        });
        for (const payload of client.queue) {
          // Not `send(...) ?? "not_ready"`: `??` also replaces send's null (sent), which
          // counted every payload queued during the open as dropped.
          const dropped = datagrams === undefined
            ? "not_ready"
            : datagrams.send(message.flow, payload);
          if (dropped !== null) metrics.drops.inc({ reason: dropped });
          else {
            metrics.datagrams.inc({ direction: "to_relay" });
            metrics.bytes.inc({ direction: "to_relay" }, payload.length);
            countFlow(client.entry, true, payload.length);
          }
        }
        client.queue = [];
        return;
      }
      case "refused": {
        const client = byRequest.get(message.id);
        if (client === undefined || client.session !== from) return;
        byRequest.delete(message.id);
        refuseClient(client, message.reason, message.message);
        return;
      }
      case "close": {
        const client = byFlow.get(message.flow);
        if (client !== undefined && client.session === from) {
          forgetClient(client, false, "connector_close");
        }
        return;
      }
      case "draining":
        sessions.retire(from);
        return;
      default:
        return;
    }
  }

  /** The connector or the relay refused `client`'s flow: what it queued is dropped. */
  function refuseClient(client: ClientFlow, reason: RefusedReason, text: string): void {
    metrics.flowRefusals.inc({ reason });
    metrics.drops.inc({ reason: "refused" }, client.queue.length);
    client.queue = [];
    client.request = 0;
    client.refusedUntil = Date.now() + REFUSAL_HOLD_MS;
    openRefused(
      ledger,
      logger,
      client.span,
      {
        service: client.forward.service,
        protocol: "udp",
        local: localOf(client),
        relay: client.session?.relay ?? session?.relay ?? "",
      },
      reason,
      text,
    );
    client.span = null;
  }

  /** A control message from the relay that is not about sessions. */
  function onRelayControl(message: ControlMessage): void {
    switch (message.type) {
      case "service_down":
      case "service_up":
        if (message.type === "service_down") servicesDown.add(message.service);
        else {
          servicesDown.delete(message.service);
          // A client refused a moment ago (no connector yet) may try again right away.
          for (const forward of forwards) {
            if (forward.service !== message.service) continue;
            for (const client of forward.clients.values()) client.refusedUntil = 0;
          }
        }
        metrics.servicesDown.set(servicesDown.size);
        logger.info(message.type.replace("_", " "), { service: message.service });
        return;
      default:
        return;
    }
  }

  function forgetClient(client: ClientFlow, notify: boolean, reason: string): void {
    client.forward.clients.delete(client.key);
    if (client.request !== 0) byRequest.delete(client.request);
    client.span?.end(reason);
    if (client.entry !== null) ledger.close(client.entry, reason);
    if (client.flow !== null) {
      byFlow.delete(client.flow);
      const carrier = client.session;
      const datagrams = carrier === null ? undefined : datagramsOf.get(carrier);
      datagrams?.dropFlow(client.flow);
      metrics.flowsActive.dec({ protocol: "udp" });
      if (notify && datagrams !== undefined) {
        carrier!.send({ type: "close", flow: client.flow, reason });
      }
    }
  }

  /** What each carrier of flows (an end-to-end session, or the relay connection) does. */
  const carriers: FlowSessionHandlers = {
    onUp(up) {
      // The first message opens the session's control stream, on which the connector can
      // then tell us it drains; it names our protocol version.
      if (!relayCarried) up.send({ type: "hello", v: PROTOCOL_VERSION, role: "agent" });
      datagramsOf.set(
        up,
        createFlowDatagrams(up.conn, {
          maxBytes: config.reassembly.max_bytes,
          timeoutMs: config.reassembly.timeout_ms,
        }),
      );
      tcp.sessionUp();
      for (const client of waitingClients()) {
        if (sessionFor(client.forward.service) === up) requestFlow(client, up);
      }
    },
    onMessage: (from, message) => onControl(from, message),
    onDatagram(from, frame) {
      const dropped = datagramsOf.get(from)?.receive(frame, (flow, payload) => {
        const client = byFlow.get(flow);
        if (client === undefined || client.session !== from) {
          metrics.drops.inc({ reason: "unknown_flow" });
          return;
        }
        client.lastActive = Date.now();
        client.forward.socket.send(payload, client.target);
        metrics.datagrams.inc({ direction: "from_relay" });
        metrics.bytes.inc({ direction: "from_relay" }, payload.length);
        if (client.entry !== null) countFlow(client.entry, false, payload.length);
      });
      if (dropped) metrics.drops.inc({ reason: dropped });
    },
    onStreamReadable: (from, streamId) => tcp.readable(from, streamId),
    onStreamWritable: (from, streamId) => tcp.writable(from, streamId),
    onDown(down, reason) {
      tcp.sessionDown(down);
      datagramsOf.delete(down);
      // Flows belonged to that session; clients re-open on their next packet.
      for (const forward of forwards) {
        for (const client of [...forward.clients.values()]) {
          if (client.session === down) forgetClient(client, false, "session_lost");
        }
      }
      logger.info("flow carrier down", { relay: down.relay, reason });
    },
  };
  // Each local client waits for its service's session; once up, its flow opens.
  const sessions = createAgentSessions({
    tls: () => tls,
    idleTimeoutMs: config.idle_timeout_ms,
    openTimeoutMs: SESSION_OPEN_TIMEOUT_MS,
    onHandlerError: deps.onHandlerError,
    logger,
    metrics,
    handlers: carriers,
    onRefused(service, reason, text) {
      for (const client of waitingClients()) {
        if (client.forward.service === service) refuseClient(client, reason, text);
      }
      tcp.refuseWaiting(service, reason, text);
    },
  });
  const sessionFor = (service: string, traceparent?: string): SessionState =>
    relayCarried ? session ?? "no_relay" : sessions.sessionFor(service, traceparent);

  /** Clients with payloads queued and no open asked for yet (waiting for a session). */
  function waitingClients(): ClientFlow[] {
    return forwards.flatMap((forward) =>
      [...forward.clients.values()].filter((c) => c.queue.length > 0 && c.request === 0)
    );
  }

  // Each accepted TCP connection becomes a stream on its service's session (tcp_forward.ts).
  const tcp = startTcpForwards({
    forwards: config.forwards.filter((f) => f.listen.protocol === "tcp"),
    session: (service) => (draining ? "no_relay" : sessionFor(service)),
    holdMs: config.connect_hold_ms,
    logger,
    metrics,
    ledger,
    tracer: deps.tracer,
  });

  const link = runRelayLink({
    relays: config.relays,
    serverName: config.tls.server_name,
    token: config.token?.value,
    role: "agent",
    tls: () => tls,
    idleTimeoutMs: config.idle_timeout_ms,
    signal: stop.signal,
    logger,
    backoff: createBackoff({ baseMs: config.reconnect.base_ms, maxMs: config.reconnect.max_ms }),
    onReconnect: () => metrics.reconnects.inc(),
    onHandlerError: deps.onHandlerError,
    handlers: {
      onUp(up) {
        session = up;
        metrics.relayConnected.set(1);
        deps.onConnected?.();
        if (relayCarried) return carriers.onUp(up);
        // Sessions carried by another relay move here; what waited for a relay asks now.
        sessions.relayUp(up);
        tcp.sessionUp();
        for (const client of waitingClients()) sessions.sessionFor(client.forward.service);
      },
      onMessage(from, message) {
        if (relayCarried) onControl(from, message);
        if (relayCarried || !sessions.message(from, message)) onRelayControl(message);
      },
      onDatagram(from, frame) {
        if (relayCarried) carriers.onDatagram(from, frame);
        // Otherwise flows ride end-to-end sessions: the relay sends us no DATAGRAM frames.
        else metrics.drops.inc({ reason: "unknown_flow" });
      },
      onStreamReadable: (from, streamId) => relayCarried && tcp.readable(from, streamId),
      onStreamWritable: (from, streamId) => relayCarried && tcp.writable(from, streamId),
      onChannelPacket: (from, packet) => sessions.packet(from, packet),
      onDown(down, reason) {
        session = null;
        if (relayCarried) carriers.onDown(down, reason, true);
        sessions.relayDown(
          down,
          reason.includes("draining")
            ? "draining"
            : reason.includes("keepalives")
            ? "dead"
            : "relay_closed",
        );
        servicesDown.clear();
        metrics.servicesDown.set(0);
        metrics.relayConnected.set(0);
        logger.warn("relay session lost", { reason });
      },
    },
  });

  const sweeper = setInterval(() => {
    const now = Date.now();
    const idleBefore = now - config.flow_idle_ms;
    for (const forward of forwards) {
      for (const client of [...forward.clients.values()]) {
        if (client.lastActive < idleBefore) forgetClient(client, true, "idle");
        else if (session === null && client.queue.length > 0) {
          if (now - client.heldSince < config.connect_hold_ms) continue;
          metrics.drops.inc({ reason: "not_connected" }, client.queue.length);
          client.queue = [];
        }
      }
    }
    for (const datagrams of datagramsOf.values()) {
      datagrams.sweep((reason, count) => metrics.drops.inc({ reason }, count));
    }
  }, Math.min(1000, config.flow_idle_ms));

  // Config order, so scripts can find a forward's port by its place or its service.
  const udpBound = forwards.map((f) => f.listen);
  const tcpBound = [...tcp.listening];
  const bound = config.forwards.map(({ listen, service }) => ({
    service,
    listen: (listen.protocol === "udp" ? udpBound : tcpBound).shift()!,
  }));

  return {
    listening: bound.map((f) => f.listen),
    forwards: bound,
    isReady: () => session !== null,
    health() {
      return {
        role: "agent",
        relay: session?.relay ?? null,
        sessions: sessions.health(),
        tcp_flows: tcp.count(),
        services_down: [...servicesDown],
        forwards: forwards.map((f) => ({
          listen: f.listen,
          service: f.service,
          flows: f.clients.size,
        })),
      };
    },
    setTls(next) {
      tls = next;
    },
    async drain(drainMs) {
      draining = true;
      for (const forward of forwards) forward.socket.close();
      tcp.stopAccepting();
      // Local clients cannot be told to stop; give replies in flight a short moment.
      const deadline = Date.now() + Math.min(drainMs, 500);
      while (Date.now() < deadline && byRequest.size > 0) {
        await new Promise((r) => setTimeout(r, 20));
      }
      clearInterval(sweeper);
      for (const forward of forwards) {
        for (const client of [...forward.clients.values()]) forgetClient(client, true, "drain");
      }
      // TCP clients may finish what they are exchanging within the drain period.
      const tcpDeadline = Date.now() + drainMs;
      while (Date.now() < tcpDeadline && tcp.count() > 0) {
        await new Promise((r) => setTimeout(r, 20));
      }
      tcp.closeAll();
      sessions.closeAll(CloseCode.NO_ERROR, "agent draining");
      stop.abort();
      await link;
    },
  };
}

/** A local client's address, `host:port`. */
function localOf(client: ClientFlow): string {
  const [host, port] = client.key.split("|");
  return formatHostPort({ host, port: Number(port) });
}
