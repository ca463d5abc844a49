/**
 * The connector: dials out to every relay of its list, registers its services, accepts the
 * end-to-end sessions agents open through relay channels (`sessions.ts`), and for each flow
 * an agent opens in a session (or a relay opens for an agent without a certificate), forwards
 * UDP payloads between the tunnel and the backend. Only the backend's own address may answer
 * on a flow's socket (UDP source validation).
 *
 * @module
 */
import { formatHostPort, type HostPort } from "../shared/config/address.ts";
import type { ConnectorConfig } from "../shared/config/mod.ts";
import { createFlowDatagrams, type FlowDatagrams } from "../shared/flow_datagrams.ts";
import { type Logger, rateLimitedLog } from "../shared/log.ts";
import { createBackoff } from "../shared/backoff.ts";
import type { ControlMessage, OpenMessage, ServiceProtocol } from "../shared/protocol/control.ts";
import type { HandlerErrorReporter, TlsMaterial } from "../shared/quic/mod.ts";
import { type FlowSession, runRelayLink } from "../shared/relay_link.ts";
import { CloseCode } from "../shared/quic/mod.ts";
import { createConnectorSessions } from "./sessions.ts";
import { runRelayPool } from "../shared/relay_pool.ts";
import { resolveAll } from "../shared/resolve_host.ts";
import { netPermitted } from "../shared/sandbox.ts";
import {
  openUdpSocket,
  type UdpSocket,
  type UdpTarget,
  udpTarget,
} from "../shared/quic/udp_socket.ts";
import { backendBindAddress, type BindChoice } from "./bind_address.ts";
import { createFlowLimits, type FlowLimit, isOutOfFiles } from "./flow_limits.ts";
import type { ConnectorMetrics } from "./metrics.ts";
import { createConnectorTcpFlows } from "./tcp_flows.ts";
import type { AuditLog } from "../shared/audit_log.ts";
import { countFlow, createFlowLedger, type FlowEntry } from "../shared/flow_ledger.ts";
import type { FlowSpan, FlowTracer } from "../shared/trace.ts";
import { PROTOCOL_VERSION, type RefusedReason } from "../shared/protocol/control.ts";
import { backendFields, startBackendSpan } from "./flow_audit.ts";

/** A flow to a backend, opened by a relay. */
interface BackendFlow {
  id: number;
  service: string;
  protocol: ServiceProtocol;
  socket: UdpSocket;
  target: UdpTarget;
  lastActive: number;
  /** The agent identity whose budget the flow counts against. */
  agent: string | undefined;
  /** Its ledger entry (audit record, byte counts). */
  entry: FlowEntry;
}

/**
 * A connection that carries flows to us: a relay connection (registration, channels, and
 * the flows of agents that predate end-to-end sessions) or an end-to-end session.
 */
interface CarrierState {
  session: FlowSession;
  datagrams: FlowDatagrams;
  flows: Map<number, BackendFlow>;
  registered: boolean;
}

/** A running connector. */
export interface Connector {
  /** True when registered with at least one relay. */
  isReady(): boolean;
  /** Live state for `/health`. */
  health(): Record<string, unknown>;
  /** Replaces the TLS material used for the next dials (rotation). */
  setTls(tls: TlsMaterial): void;
  /**
   * Applies a reloaded service map: withdraws removed services from every relay, registers
   * added ones, and closes flows whose service or backend address is no longer configured.
   * Flows that are still allowed keep running; flows an agent may no longer use under the
   * new `agents` allowlist end. Validate before calling; this cannot fail.
   */
  setServices(services: ConnectorConfig["services"], agents: ConnectorConfig["agents"]): void;
  /**
   * Graceful shutdown: deregister everywhere, let flows run for up to `drainMs`, then
   * close every relay session with NO_ERROR.
   */
  drain(drainMs: number): Promise<void>;
}

/** What the connector needs besides its config. */
export interface ConnectorDeps {
  logger: Logger;
  metrics: ConnectorMetrics;
  tls: TlsMaterial;
  /** Told about exceptions from relay-connection handlers (each closes its connection). */
  onHandlerError?: HandlerErrorReporter;
  /** Called whenever a relay accepts our registration. */
  onRegistered?: () => void;
  /** Where the connector's view of its flows goes (docs/AUDIT.md). */
  audit: AuditLog;
  /** Spans of flow setup. */
  tracer: FlowTracer;
}

/** An end-to-end session whose handshake has not completed in this time is closed. */
const SESSION_HANDSHAKE_TIMEOUT_MS = 10_000;

/** Starts the connector described by `config`. */
export function startConnector(config: ConnectorConfig, deps: ConnectorDeps): Connector {
  const { logger, metrics } = deps;
  const ledger = createFlowLedger(deps.audit);
  let tls = deps.tls;
  const stop = new AbortController();
  const relays = new Set<CarrierState>();
  /** Every carrier by its session: relay connections and end-to-end sessions. */
  const bySession = new Map<FlowSession, CarrierState>();
  /** Established end-to-end sessions. */
  const e2e = new Set<CarrierState>();
  /** This process, for agents moving a session to another relay (`hello.instance`). */
  const instance = crypto.randomUUID().replaceAll("-", "");
  let agents = config.agents;
  const limitLog = rateLimitedLog(5000);
  const links: Promise<void>[] = [];
  let draining = false;
  let services = config.services;
  let offers = offersOf(services);
  const limits = createFlowLimits({
    flowsPerAgent: config.limits.flows_per_agent,
    maxFlows: config.limits.max_flows,
  });
  // Backend names resolve through `hosts` (filled by the launcher): a lookup of our own
  // would need the sandbox to grant the bare name, i.e. every port of that host.
  const addressesOf = (host: string): Promise<string[]> =>
    Promise.resolve(config.hosts[host] ?? resolveAll(host));
  // One bind choice per backend address: the interface list is read once, not per flow.
  const binds = new Map<string, BindChoice>();
  const bindFor = (backend: string, service: string): string => {
    let choice = binds.get(backend);
    if (choice === undefined) {
      try {
        choice = backendBindAddress(backend);
      } catch (error) {
        // A binary built without --allow-sys=networkInterfaces: keep serving, say so.
        if (!(error instanceof Deno.errors.NotCapable)) throw error;
        choice = {
          address: backend.includes(":") ? "::" : "0.0.0.0",
          reason: "interfaces_unknown",
        };
      }
      binds.set(backend, choice);
      const fields = { service, backend, bind: choice.address, reason: choice.reason };
      if (choice.reason === "ambiguous" || choice.reason === "interfaces_unknown") {
        logger.warn(
          "backend bind address: cannot tell the routed address; binding the wildcard",
          fields,
        );
      } else logger.info("backend bind address", fields);
    }
    return choice.address;
  };
  /** Counts and logs (rate-limited) one refused open; returns the refusal's message. */
  const limitHit = (limit: FlowLimit, agent: string | undefined, service: string): string => {
    metrics.limitHits.inc({ limit });
    limitLog(
      `limit:${limit}`,
      (suppressed) =>
        logger.warn("flow refused: limit reached", { limit, agent, service, suppressed }),
    );
    return limit === "open_files"
      ? "connector is out of file descriptors"
      : `at most ${config.limits[limit]} ${
        limit === "max_flows" ? "flows on this connector" : "flows per agent on this connector"
      }`;
  };
  // TCP flows arrive as streams the relay opens; their table lives in tcp_flows.ts.
  const tcp = createConnectorTcpFlows({
    backend: (service) => services[service]?.find((u) => u.protocol === "tcp"),
    services: Object.keys(services).filter((name) =>
      services[name].some((u) => u.protocol === "tcp")
    ),
    permitted: (url) => netPermitted(url.host, url.port),
    circuit: config.circuit,
    connectTimeoutMs: config.connect_timeout_ms,
    resolve: async (host) => (await addressesOf(host))[0],
    limits,
    limitHit,
    draining: () => draining,
    authorize: (session, service, agent) => authorize(session, service, agent),
    opener: (session) => (sessions.grantOf(session) === undefined ? "server" : "client"),
    logger,
    metrics,
    ledger,
    tracer: deps.tracer,
  });

  const sessions = createConnectorSessions({
    tls: () => tls,
    idleTimeoutMs: config.idle_timeout_ms,
    sessionsPerAgent: config.limits.sessions_per_agent,
    handshakeTimeoutMs: SESSION_HANDSHAKE_TIMEOUT_MS,
    onHandlerError: deps.onHandlerError,
    logger,
    metrics,
    handlers: {
      onUp(session) {
        const state = carrier(session);
        e2e.add(state);
      },
      onMessage(session, message) {
        const state = bySession.get(session);
        if (state === undefined) return;
        // An agent may only say hello, and open and close flows on its session.
        if (message.type === "open" || message.type === "close") onControl(state, message);
        else if (message.type === "hello" && message.v === PROTOCOL_VERSION) {
          if (draining) session.send({ type: "draining", reconnect_ms: 0 });
        } else {
          metrics.drops.inc({ reason: "unexpected_message" });
          session.conn.close(CloseCode.PROTOCOL_VIOLATION, `unexpected ${message.type}`);
        }
      },
      onDatagram: (session, frame) => fromTunnel(session, frame),
      onStreamReadable: (session, streamId) => tcp.readable(session, streamId),
      onStreamWritable: (session, streamId) => tcp.writable(session, streamId),
      onDown(session, reason) {
        const state = bySession.get(session);
        if (state !== undefined) e2e.delete(state);
        carrierDown(session, reason);
      },
    },
    onGrantChanged: (session) => sessionsGrantChanged(session),
  });

  /** Ends what `session` may no longer reach (a new grant, or a reload of `agents`). */
  function sessionsGrantChanged(session: FlowSession): void {
    const state = bySession.get(session);
    if (state === undefined) return;
    const granted = (service: string) => !("reason" in authorize(session, service, undefined));
    for (const flow of [...state.flows.values()]) {
      if (!granted(flow.service)) endFlow(state, flow, true, "forbidden");
    }
    tcp.endUngranted(session, granted);
    // Nothing left to reach: the session itself ends.
    if (sessions.grantOf(session)?.services.size === 0) {
      session.conn.close(CloseCode.FORBIDDEN, "no service granted");
    }
  }

  /**
   * Who a flow on `session` is for, or why it may not open. On an end-to-end session: the
   * agent its certificate names, if both the relay's grant and our own `agents` allow the
   * service. On a relay connection: the agent the relay names.
   */
  function authorize(
    session: FlowSession,
    service: string,
    announced: string | undefined,
  ): { agent: string | undefined } | { reason: RefusedReason; message: string } {
    const grant = sessions.grantOf(session);
    if (grant === undefined) return { agent: announced };
    const allowed = agents[service];
    if (!grant.services.has(service) || (allowed !== undefined && !allowed.includes(grant.agent))) {
      if (services[service] !== undefined) metrics.grantRefusals.inc({ service });
      logger.warn("flow refused: not granted to this agent", { agent: grant.agent, service });
      return { reason: "forbidden", message: `"${grant.agent}" may not use "${service}" here` };
    }
    return { agent: grant.agent };
  }

  /** The state of a new carrier of flows. */
  function carrier(session: FlowSession): CarrierState {
    const state: CarrierState = {
      session,
      datagrams: createFlowDatagrams(session.conn, {
        maxBytes: config.reassembly.max_bytes,
        timeoutMs: config.reassembly.timeout_ms,
      }),
      flows: new Map(),
      registered: false,
    };
    bySession.set(session, state);
    return state;
  }

  /** A carrier ended: its flows end with it. */
  function carrierDown(session: FlowSession, reason: string): void {
    tcp.sessionDown(session);
    const state = bySession.get(session);
    if (state === undefined) return;
    bySession.delete(session);
    for (const flow of state.flows.values()) endFlow(state, flow, false, "session_lost");
    logger.debug("flow carrier down", { relay: session.relay, reason });
  }

  /** A DATAGRAM frame from an agent (through a relay or an end-to-end session). */
  function fromTunnel(session: FlowSession, frame: Uint8Array): void {
    const state = bySession.get(session);
    if (state === undefined) return;
    const dropped = state.datagrams.receive(frame, (flowId, payload) => {
      const flow = state.flows.get(flowId);
      if (flow === undefined) {
        metrics.drops.inc({ reason: "unknown_flow" });
        return;
      }
      flow.lastActive = Date.now();
      flow.socket.send(payload, flow.target);
      metrics.datagrams.inc({ direction: "to_backend" });
      metrics.bytes.inc({ direction: "to_backend" }, payload.length);
      countFlow(flow.entry, true, payload.length);
    });
    if (dropped !== null) metrics.drops.inc({ reason: dropped });
  }

  // One link per relay address; names (e.g. a headless Service) may stand for several relays.
  links.push(runRelayPool({
    relays: config.relays,
    signal: stop.signal,
    logger,
    startLink: (address, signal) => linkTo(address, signal),
  }));

  function linkTo(relay: HostPort, signal: AbortSignal): Promise<void> {
    return runRelayLink({
      relays: [relay],
      serverName: config.tls.server_name,
      token: config.token?.value,
      role: "connector",
      // Without a certificate we cannot be the TLS server of end-to-end sessions: agents then
      // reach us through the relay's own flows only.
      instance: config.tls.cert === undefined ? undefined : instance,
      tls: () => tls,
      idleTimeoutMs: config.idle_timeout_ms,
      signal,
      logger,
      backoff: createBackoff({
        baseMs: config.reconnect.base_ms,
        maxMs: config.reconnect.max_ms,
      }),
      onReconnect: () => metrics.reconnects.inc(),
      onHandlerError: deps.onHandlerError,
      handlers: {
        onUp(session) {
          relays.add(carrier(session));
          metrics.relayConnectionsActive.set(relays.size);
          session.send({ type: "register", services: offers });
        },
        onMessage(session, message) {
          if (message.type === "channel") return sessions.announce(session, message);
          if (message.type === "channel_closed") return sessions.closed(session, message.channel);
          const state = bySession.get(session);
          if (state !== undefined) onControl(state, message);
        },
        onDatagram: (session, frame) => fromTunnel(session, frame),
        onChannelPacket: (session, packet) => sessions.packet(session, packet),
        onStreamReadable: (session, streamId) => tcp.readable(session, streamId),
        onStreamWritable: (session, streamId) => tcp.writable(session, streamId),
        onDown(session, reason) {
          sessions.relayDown(session);
          const state = bySession.get(session);
          if (state !== undefined) relays.delete(state);
          carrierDown(session, reason);
          metrics.relayConnectionsActive.set(relays.size);
          logger.warn("relay session lost", { relay: session.relay, reason });
        },
      },
    });
  }

  function onControl(state: CarrierState, message: ControlMessage): void {
    switch (message.type) {
      case "registered":
        state.registered = message.services.length > 0;
        metrics.registrations.inc({ result: "accepted" }, message.services.length);
        if (message.rejected.length > 0) {
          metrics.registrations.inc({ result: "rejected" }, message.rejected.length);
          logger.error("relay refused to register services", {
            relay: state.session.relay,
            rejected: message.rejected,
          });
        }
        logger.info("registered", { relay: state.session.relay, services: message.services });
        if (state.registered) deps.onRegistered?.();
        return;
      case "open": {
        const span = startBackendSpan(
          deps.tracer,
          message.service,
          message.protocol,
          message.agent,
          message.traceparent,
        );
        openFlow(state, message, span).catch((error) => {
          metrics.backendErrors.inc({ reason: "open_failed" });
          logger.warn("cannot open flow", { service: message.service, error, ...span.logFields });
          refuseOpen(
            state,
            message,
            span,
            "backend_error",
            "connector could not open the backend socket",
          );
        });
        return;
      }
      case "close": {
        const flow = state.flows.get(message.flow);
        if (flow !== undefined) endFlow(state, flow, false, "relay_close");
        return;
      }
      default:
        return;
    }
  }

  /** Answers a relay's UDP open with `refused`: audited, and the open's span ended. */
  function refuseOpen(
    state: CarrierState,
    message: OpenMessage,
    span: FlowSpan,
    reason: RefusedReason,
    text: string,
  ): void {
    const url = services[message.service]?.find((u) => u.protocol === message.protocol);
    ledger.refused({
      service: message.service,
      protocol: message.protocol,
      ...backendFields(
        message.agent,
        url === undefined ? undefined : formatHostPort(url),
        state.session.relay,
      ),
      reason,
      detail: text,
      ...span.logFields,
    });
    span.end(reason);
    state.session.send({ type: "refused", id: message.id, reason, message: text });
  }

  async function openFlow(
    state: CarrierState,
    request: OpenMessage,
    span: FlowSpan,
  ): Promise<void> {
    const decision = authorize(state.session, request.service, request.agent);
    if ("reason" in decision) {
      return refuseOpen(state, request, span, decision.reason, decision.message);
    }
    const message = { ...request, agent: decision.agent };
    const { service, protocol } = message;
    const url = services[service]?.find((u) => u.protocol === protocol);
    if (url === undefined) {
      refuseOpen(
        state,
        message,
        span,
        "unknown_service",
        `this connector does not serve ${service} over ${protocol}`,
      );
      return;
    }
    // The sandbox was derived from the config the launcher saw; a backend outside it (an
    // override the launcher did not see) would fail on its first send. Refuse it cleanly.
    if (!netPermitted(url.host, url.port)) {
      metrics.backendErrors.inc({ reason: "not_permitted" });
      logger.warn("backend outside the sandbox: refusing flow", {
        service,
        backend: formatHostPort(url),
      });
      refuseOpen(
        state,
        message,
        span,
        "backend_error",
        `backend of ${service} is outside this connector's network permissions`,
      );
      return;
    }
    if (protocol !== "udp") {
      refuseOpen(
        state,
        message,
        span,
        "unavailable",
        `${protocol} flows are not served by this connector`,
      );
      return;
    }
    if (draining) {
      refuseOpen(state, message, span, "draining", "connector draining");
      return;
    }
    const { agent } = message;
    const limit = limits.acquire(agent);
    if (limit !== null) {
      refuseOpen(state, message, span, "limit", limitHit(limit, agent, service));
      return;
    }
    try {
      await openBackendSocket(state, message, url.host, url.port, span);
    } catch (error) {
      limits.release(agent);
      if (!isOutOfFiles(error)) throw error;
      refuseOpen(state, message, span, "limit", limitHit("open_files", agent, service));
    }
  }

  async function openBackendSocket(
    state: CarrierState,
    message: OpenMessage,
    host: string,
    port: number,
    span: FlowSpan,
  ): Promise<void> {
    const { id, service, protocol, agent } = message;
    const flowId = message.flow ?? id;
    const url = { host, port };
    const backendHost = (await addressesOf(host))[0];
    // The carrier may have ended during the lookup: nothing would close this flow.
    if (bySession.get(state.session) !== state) {
      limits.release(agent);
      span.end("relay session lost");
      return;
    }
    // An agent names its flows in a session: an id in use would orphan that flow's socket.
    if (state.flows.has(flowId)) {
      limits.release(agent);
      metrics.drops.inc({ reason: "duplicate_flow" });
      refuseOpen(state, message, span, "unavailable", `flow ${flowId} is already open`);
      return;
    }
    const target = udpTarget(backendHost, url.port);
    const flow: BackendFlow = {
      id: flowId,
      service,
      protocol,
      target,
      lastActive: Date.now(),
      agent,
      socket: undefined as unknown as UdpSocket,
      entry: undefined as unknown as FlowEntry,
    };
    flow.socket = openUdpSocket({
      host: bindFor(backendHost, service),
      port: 0,
      onPacket(data, from) {
        // Only the backend may answer: anything else on this socket is injected traffic.
        if (from.hostname !== backendHost || from.port !== url.port) {
          metrics.sourceValidationRejects.inc({ service });
          limitLog(
            `source:${service}`,
            (suppressed) =>
              logger.warn("dropped datagram from unexpected source", {
                service,
                source: from.hostname,
                expected: formatHostPort(url),
                suppressed,
              }),
          );
          return;
        }
        flow.lastActive = Date.now();
        const dropped = state.datagrams.send(flow.id, data);
        if (dropped !== null) {
          metrics.drops.inc({ reason: dropped });
          return;
        }
        metrics.datagrams.inc({ direction: "from_backend" });
        metrics.bytes.inc({ direction: "from_backend" }, data.length);
        countFlow(flow.entry, false, data.length);
      },
      onError(error, during) {
        metrics.backendErrors.inc({ reason: during });
        limitLog(
          `error:${service}`,
          (suppressed) =>
            logger.warn("backend socket error", { service, during, error, suppressed }),
        );
      },
    });
    state.flows.set(flowId, flow);
    metrics.flowsOpened.inc({ protocol });
    metrics.flowsActive.inc({ protocol });
    flow.entry = ledger.open({
      id: flowId,
      service,
      protocol,
      fields: backendFields(agent, formatHostPort(url), state.session.relay),
      openFields: span.logFields,
    });
    span.set({ "ztna.flow": flowId });
    span.end();
    logger.debug("flow opened", {
      ...span.logFields,
      relay: state.session.relay,
      flow: flowId,
      service,
      backend_socket: formatHostPort({
        host: flow.socket.addr.hostname,
        port: flow.socket.addr.port,
      }),
    });
    state.datagrams.limitFlow(flowId, message.max_datagram);
    state.session.send({ type: "opened", id, flow: flowId });
  }

  function endFlow(state: CarrierState, flow: BackendFlow, notify: boolean, reason = "idle"): void {
    if (!state.flows.delete(flow.id)) return;
    flow.socket.close();
    ledger.close(flow.entry, reason);
    limits.release(flow.agent);
    state.datagrams.dropFlow(flow.id);
    metrics.flowsActive.dec({ protocol: flow.protocol });
    if (notify) state.session.send({ type: "close", flow: flow.id, reason });
  }

  // Idle flows are closed and reassembly leftovers swept on one timer for all carriers.
  const sweeper = setInterval(() => {
    const idleBefore = Date.now() - config.flow_idle_ms;
    for (const state of bySession.values()) {
      // Per carrier, guarded: a failure ends that connection, not the sweep or process.
      state.session.conn.guard("sweep", () => {
        for (const flow of state.flows.values()) {
          if (flow.lastActive < idleBefore) endFlow(state, flow, true);
        }
        state.datagrams.sweep((reason, count) => metrics.drops.inc({ reason }, count));
      });
    }
  }, Math.min(1000, config.flow_idle_ms));

  const flowCount = () => [...bySession.values()].reduce((n, s) => n + s.flows.size, tcp.count());

  return {
    isReady: () => [...relays].some((s) => s.registered),
    health() {
      return {
        role: "connector",
        relays: [...relays].map((s) => ({ relay: s.session.relay, registered: s.registered })),
        relay_connections: relays.size,
        sessions: sessions.count(),
        instance,
        services: Object.keys(services),
        flows: flowCount(),
      };
    },
    setTls(next) {
      tls = next;
    },
    setServices(next, nextAgents) {
      const previous = services;
      services = next;
      agents = nextAgents;
      offers = offersOf(next);
      const removed = Object.keys(previous).filter((name) => next[name] === undefined);
      for (const state of relays) {
        if (removed.length > 0) state.session.send({ type: "deregister", services: removed });
        // Registering is idempotent at the relay: offers it already has stay as they are.
        if (!draining) state.session.send({ type: "register", services: offers });
      }
      for (const state of bySession.values()) {
        for (const flow of [...state.flows.values()]) {
          const url = previous[flow.service]?.find((u) => u.protocol === flow.protocol);
          const still = next[flow.service]?.some((u) =>
            u.protocol === flow.protocol && u.host === url?.host && u.port === url?.port
          );
          if (!still) endFlow(state, flow, true, "service removed");
        }
      }
      tcp.endRemoved();
      // Our own allowlist may have taken a service from an agent.
      for (const state of e2e) sessionsGrantChanged(state.session);
      logger.info("services reloaded", { services: Object.keys(next), removed });
    },
    async drain(drainMs) {
      draining = true;
      for (const state of relays) state.session.send({ type: "deregister" });
      // Agents keep their flows here for the drain period and open new ones elsewhere.
      for (const state of e2e) state.session.send({ type: "draining", reconnect_ms: 0 });
      const deadline = Date.now() + drainMs;
      while (Date.now() < deadline && flowCount() > 0) {
        await new Promise((r) => setTimeout(r, 50));
      }
      clearInterval(sweeper);
      for (const state of bySession.values()) {
        for (const flow of state.flows.values()) endFlow(state, flow, true, "drain");
      }
      sessions.closeAll(CloseCode.NO_ERROR, "connector draining");
      stop.abort();
      await Promise.all(links);
    },
  };
}

/** The (service, protocol) pairs a service map offers, as sent in `register`. */
function offersOf(
  services: ConnectorConfig["services"],
): { name: string; protocol: ServiceProtocol }[] {
  return Object.entries(services).flatMap(([name, urls]) =>
    [...new Set(urls.map((url) => url.protocol))].map((protocol) => ({ name, protocol }))
  );
}
