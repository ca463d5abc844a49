/**
 * The relay: accepts connectors and agents over QUIC, authenticates them by certificate,
 * keeps the service registry, authorizes flows by policy and forwards DATAGRAM frames
 * between the two ends of each flow, rewriting flow ids. It never connects anywhere itself.
 *
 * @module
 */
import {
  CONTROL_STREAM_ID,
  type ControlChannel,
  createControlChannel,
} from "../shared/control_channel.ts";
import type { RelayConfig } from "../shared/config/mod.ts";
import { identityFromCertificate } from "../shared/identity/peer_identity.ts";
import type { Logger } from "../shared/log.ts";
import type {
  ControlMessage,
  OpenMessage,
  RefusedReason,
  ServiceProtocol,
} from "../shared/protocol/control.ts";
import { PRE_AUTH_MAX_FRAME_BYTES, PROTOCOL_VERSION } from "../shared/protocol/control.ts";
import { parseDatagram, rewriteFlow } from "../shared/protocol/datagram.ts";
import {
  CloseCode,
  describeClose,
  type HandlerErrorReporter,
  handshakeFailureReason,
  type QuicConnection,
  type QuicServer,
  startQuicServer,
  type TlsMaterial,
} from "../shared/quic/mod.ts";
import type { RelayMetrics, RelayMetricSources } from "./metrics.ts";
import { createPolicy, type Policy } from "./policy.ts";
import { createHandshakeLimiter } from "./handshake_limiter.ts";
import { createPeerAuth } from "./peer_auth.ts";
import type { RelayTokens } from "../shared/config/tokens.ts";
import { createTokenBucket } from "../shared/token_bucket.ts";
import { createServiceRegistry } from "./registry.ts";
import { createTcpFlows, type OpenDecision } from "./tcp_flows.ts";

/** One end of a flow: a session and the flow id that session uses. */
interface FlowEnd {
  session: Session;
  flow: number;
}

/** A flow between an agent and a connector. */
interface Flow {
  service: string;
  protocol: ServiceProtocol;
  agent: FlowEnd;
  connector: FlowEnd;
}

/** An open request waiting for the connector's answer. */
interface PendingOpen {
  agent: Session;
  agentRequest: number;
  service: string;
  protocol: ServiceProtocol;
  connectorFlow: number;
  started: number;
  timer: ReturnType<typeof setTimeout>;
}

/** A connection after the TLS handshake. */
interface Session {
  conn: QuicConnection;
  identity: string;
  role: "connector" | "agent" | null;
  channel: ControlChannel;
  log: Logger;
  /** Flows by the flow id this session uses. */
  flows: Map<number, Flow>;
  nextFlow: number;
  /** Open requests sent to this connector, by the flow id it was asked to open. */
  pending: Map<number, PendingOpen>;
  /** Services this connector registered, with their protocols. */
  offers: Set<string>;
  /** Set once a deregister or close means no new flows go here. */
  retiring: boolean;
  /** Takes one control message from this connection's rate budget; false when spent. */
  controlBudget: () => boolean;
  /** Set once a limit closed this connection: later messages are ignored. */
  shed: boolean;
}

/** A running relay. */
export interface Relay {
  /** The bound QUIC address. */
  readonly addr: { host: string; port: number };
  /** Live state for `/health`. */
  health(): Record<string, unknown>;
  /**
   * Applies a new policy (reload): withdraws registrations it forbids, closes flows it no
   * longer allows (telling both ends), keeps every flow it still allows, and tells agents
   * whose view of a service changed `service_up`/`service_down`.
   */
  setPolicy(services: RelayConfig["services"]): void;
  /** Replaces the certificate for new connections (rotation). */
  setTls(tls: TlsMaterial): void;
  /** Replaces the accepted tokens (rotation); established connections are kept. */
  setTokens(tokens: RelayTokens): void;
  /**
   * Graceful shutdown: stop accepting, tell peers `draining`, give flows `drainMs` to
   * finish (or until none is left), then close every connection with NO_ERROR.
   */
  drain(drainMs: number): Promise<void>;
}

/** What the relay needs besides its config. */
export interface RelayDeps {
  logger: Logger;
  metrics: (sources: RelayMetricSources) => RelayMetrics;
  tls: TlsMaterial;
  /** Told about exceptions from connection handlers (each closes its connection). */
  onHandlerError?: HandlerErrorReporter;
}

const OPEN_TIMEOUT_MS = 5000;
const flowKey = (protocol: ServiceProtocol) => protocol;

/** Starts the relay described by `config`. */
export function startRelay(config: RelayConfig, deps: RelayDeps): Relay {
  const { logger } = deps;
  let policy: Policy = createPolicy(config.services);
  let policyServices = config.services;
  const registry = createServiceRegistry<Session>();
  const sessions = new Set<Session>();
  const scratch = new Uint8Array(2048);
  let draining = false;
  const admitHandshake = createHandshakeLimiter({
    perSecond: config.limits.handshakes_per_second_per_ip,
    totalPerSecond: config.limits.handshakes_per_second,
  });
  const auth = createPeerAuth(config.auth, config.tokens);

  const server: QuicServer = startQuicServer({
    host: config.listen.host,
    port: config.listen.port,
    tls: deps.tls,
    idleTimeoutMs: config.idle_timeout_ms,
    maxConnections: config.limits.max_connections,
    // Token-only peers present no certificate, so the TLS layer must not ask for one.
    verifyPeer: config.auth !== "token",
    datagramQueue: config.limits.datagram_queue,
    admit: (peer) => {
      const refusal = admitHandshake(peer.host);
      if (refusal !== null) metrics.limitHits.inc({ limit: `handshakes_per_second_${refusal}` });
      return refusal === null;
    },
    onConnection: accept,
    onHandlerError: deps.onHandlerError,
  });
  const metrics = deps.metrics({
    packetDrops: () => ({ ...server.counters.drops }),
    // Services of the current policy (a bounded label set), with how many connectors serve them.
    serviceConnectors: () =>
      Object.fromEntries(
        Object.keys(policyServices).map((name) => [name, registry.connectors(name)]),
      ),
  });
  // TCP flows ride streams; they are authorized exactly like UDP opens (authorizeOpen).
  const tcp = createTcpFlows<Session>({
    authorize: (agent, service) => authorizeOpen(agent, service, "tcp"),
    metrics,
    openTimeoutMs: OPEN_TIMEOUT_MS,
  });

  /**
   * Installs the one set of handlers a connection gets: events reach its session once the
   * handshake made one (a peer may open streams before that: they are refused).
   */
  function accept(conn: QuicConnection): void {
    let session: Session | null = null;
    conn.setHandlers({
      onEstablished() {
        const identity = identityFromCertificate(conn.peerCertificate());
        // With token auth the identity comes with `hello`; until then the session has none.
        if (identity === null && auth.mode === "token") {
          session = startSession(conn, "");
          return;
        }
        if (identity === null) {
          metrics.authFailures.inc({ reason: "no_identity" });
          conn.close(CloseCode.FORBIDDEN, "certificate carries no identity");
          return;
        }
        session = startSession(conn, identity);
      },
      onDatagram(frame) {
        if (session !== null) forwardDatagram(session, frame);
      },
      onStreamReadable(streamId) {
        if (session === null) return conn.streamReset(streamId, CloseCode.PROTOCOL_VIOLATION);
        if (streamId === CONTROL_STREAM_ID) session.channel.readable();
        else if (session.role === "agent") tcp.agentReadable(session, streamId);
        else if (session.role === "connector") tcp.connectorReadable(session, streamId);
        else conn.streamReset(streamId, CloseCode.PROTOCOL_VIOLATION);
      },
      onStreamWritable(streamId) {
        if (session === null) return;
        if (streamId === CONTROL_STREAM_ID) session.channel.writable();
        else if (session.role === "agent") tcp.agentWritable(session, streamId);
        else if (session.role === "connector") tcp.connectorWritable(session, streamId);
      },
      onClosed(info) {
        if (session !== null) return endSession(session, describeClose(info, "closed"));
        if (!info.established) {
          metrics.handshakeFailures.inc({ reason: handshakeFailureReason(info) });
          logger.debug("handshake failed", {
            conn: conn.id,
            reason: describeClose(info, "closed"),
          });
        }
      },
    });
  }

  function startSession(conn: QuicConnection, identity: string): Session {
    const log = logger.child({ conn: conn.id, identity });
    const session: Session = {
      conn,
      identity,
      role: null,
      channel: undefined as unknown as ControlChannel,
      log,
      flows: new Map(),
      nextFlow: 1,
      pending: new Map(),
      offers: new Set(),
      retiring: false,
      controlBudget: createTokenBucket({
        perSecond: config.limits.control_frames_per_second,
        burst: 2 * config.limits.control_frames_per_second,
      }),
      shed: false,
    };
    session.channel = createControlChannel(conn, {
      maxFrameBytes: config.limits.max_frame_bytes,
      // Until `hello` is accepted the peer is nobody: it may not make us buffer 64 KiB.
      initialMaxFrameBytes: Math.min(PRE_AUTH_MAX_FRAME_BYTES, config.limits.max_frame_bytes),
      onMessage: (message) => onControl(session, message),
      onProtocolError: (reason, detail) => violation(session, reason, detail),
    });
    sessions.add(session);
    if (draining) conn.close(CloseCode.GOING_AWAY, "relay draining");
    return session;
  }

  function violation(session: Session, reason: string, detail: string): void {
    metrics.protocolViolations.inc({ reason });
    session.log.warn("protocol violation: closing connection", { reason, detail });
    session.conn.close(CloseCode.PROTOCOL_VIOLATION, reason);
  }

  /** Closes a connection that exceeded a limit and counts it; the process carries on. */
  function shed(session: Session, limit: string, detail: Record<string, unknown>): void {
    if (session.shed) return;
    session.shed = true;
    metrics.limitHits.inc({ limit });
    session.log.warn("limit exceeded: closing connection", { limit, ...detail });
    session.conn.close(CloseCode.LIMIT, limit);
  }

  function onControl(session: Session, message: ControlMessage): void {
    if (session.shed) return;
    // A connector's answers to the relay's own open requests come at the rate agents open
    // flows, not at a rate the connector chooses: they do not spend its budget (else a burst
    // of agent opens would get the connector shed). Unsolicited answers still do.
    const solicited = (message.type === "opened" || message.type === "refused") &&
      session.pending.has(message.id);
    if (!solicited && !session.controlBudget()) {
      return shed(session, "control_frames_per_second", {
        per_second: config.limits.control_frames_per_second,
      });
    }
    if (session.role === null) {
      if (message.type !== "hello" || (message.role !== "connector" && message.role !== "agent")) {
        violation(session, "expected_hello", `first message was ${message.type}`);
        return;
      }
      if (message.v !== PROTOCOL_VERSION) {
        session.channel.send({
          type: "error",
          code: "unsupported_version",
          message: `relay speaks protocol v${PROTOCOL_VERSION}, not v${message.v}`,
        });
        violation(session, "unsupported_version", `v${message.v}`);
        return;
      }
      const result = auth.authenticate(session.identity || null, message.token);
      if ("failure" in result) {
        // The reason and address only: a presented token is never logged or echoed.
        metrics.authFailures.inc({ reason: result.failure });
        session.log.warn("authentication failed: closing connection", {
          reason: result.failure,
          role: message.role,
          peer: peerAddress(session),
        });
        session.conn.close(CloseCode.FORBIDDEN, result.failure);
        return;
      }
      session.identity = result.identity;
      session.log = logger.child({ conn: session.conn.id, identity: result.identity });
      let held = 0;
      for (const s of sessions) if (s.role !== null && s.identity === result.identity) held++;
      if (held >= config.limits.connections_per_identity) {
        return shed(session, "connections_per_identity", {
          limit: config.limits.connections_per_identity,
        });
      }
      session.role = message.role;
      session.channel.setMaxFrameBytes(config.limits.max_frame_bytes);
      metrics.connectionsAccepted.inc({ role: message.role });
      metrics.connectionsActive.inc({ role: message.role });
      session.channel.send({
        type: "hello",
        v: PROTOCOL_VERSION,
        role: "relay",
        identity: session.identity,
      });
      session.log.info("peer connected", { role: message.role, peer: peerAddress(session) });
      if (draining) session.channel.send({ type: "draining", reconnect_ms: 0 });
      return;
    }
    switch (message.type) {
      case "register":
        if (onlyFor(session, "connector", message.type)) register(session, message.services);
        return;
      case "deregister":
        if (onlyFor(session, "connector", message.type)) deregister(session, message.services);
        return;
      case "open":
        if (session.role === "agent") return openFromAgent(session, message);
        return violation(session, "unexpected_open", "connectors do not open flows");
      case "opened":
      case "refused":
        if (onlyFor(session, "connector", message.type)) answerFromConnector(session, message);
        return;
      case "close":
        return closeFlow(session, message.flow, message.reason ?? "closed by peer", true);
      case "ping":
        session.channel.send({ type: "pong", seq: message.seq });
        return;
      case "pong":
        return;
      case "error":
        session.log.warn("peer reported an error", { code: message.code, detail: message.message });
        return;
      default:
        violation(session, "unexpected_message", message.type);
    }
  }

  function onlyFor(session: Session, role: "connector" | "agent", type: string): boolean {
    if (session.role === role) return true;
    violation(session, "unexpected_message", `${type} from ${session.role}`);
    return false;
  }

  function register(
    session: Session,
    services: { name: string; protocol: ServiceProtocol }[],
  ): void {
    const accepted: string[] = [];
    const rejected: { name: string; reason: string }[] = [];
    for (const { name, protocol } of services) {
      if (!policy.mayRegister(session.identity, name)) {
        rejected.push({ name, reason: "forbidden" });
        metrics.registrations.inc({ result: "forbidden" });
        metrics.authFailures.inc({ reason: "register_forbidden" });
        session.log.warn("registration refused by policy", { service: name });
        continue;
      }
      session.offers.add(`${name}/${protocol}`);
      if (registry.add(name, protocol, session)) announce(name, "service_up");
      if (!accepted.includes(name)) accepted.push(name);
      metrics.registrations.inc({ result: "accepted" });
    }
    session.retiring = false;
    metrics.servicesRegistered.set(registry.size);
    session.channel.send({ type: "registered", services: accepted, rejected });
    session.log.info("services registered", { services: accepted, rejected: rejected.length });
  }

  function deregister(session: Session, services: string[] | undefined, notify = true): void {
    for (const offer of [...session.offers]) {
      const [name, protocol] = offer.split("/") as [string, ServiceProtocol];
      if (services !== undefined && !services.includes(name)) continue;
      session.offers.delete(offer);
      if (registry.remove(name, protocol, session) && notify) announce(name, "service_down");
    }
    if (services === undefined) session.retiring = true;
    metrics.servicesRegistered.set(registry.size);
    session.log.info("services deregistered", { services: services ?? "all" });
  }

  /** Tells every agent allowed to use `service` that it came up or went down. */
  function announce(service: string, type: "service_up" | "service_down"): void {
    for (const other of sessions) {
      if (other.role === "agent" && policy.mayOpen(other.identity, service)) {
        other.channel.send({ type, service });
      }
    }
  }

  function refuse(session: Session, id: number, reason: RefusedReason, message: string): void {
    metrics.flowRefusals.inc({ reason });
    session.channel.send({ type: "refused", id, reason, message });
  }

  /** Policy, flow limit and connector choice for an agent's open: one rule for UDP and TCP. */
  function authorizeOpen(
    agent: Session,
    service: string,
    protocol: ServiceProtocol,
  ): OpenDecision<Session> {
    if (draining) return { reason: "draining", message: "relay is draining; reconnect elsewhere" };
    if (!policy.mayOpen(agent.identity, service)) {
      metrics.authFailures.inc({ reason: "open_forbidden" });
      agent.log.warn("flow refused by policy", { service });
      return {
        reason: "forbidden",
        message: `identity "${agent.identity}" may not use service "${service}"`,
      };
    }
    const flows = agent.flows.size + countPending(agent) + tcp.count(agent);
    if (flows >= config.limits.flows_per_connection) {
      metrics.limitHits.inc({ limit: "flows_per_connection" });
      return { reason: "limit", message: `at most ${config.limits.flows_per_connection} flows` };
    }
    const connector = registry.pick(service, protocol, (s) => !s.retiring);
    if (connector === undefined) {
      return {
        reason: registry.has(service) ? "unavailable" : "unknown_service",
        message: `no connector serves ${service} over ${protocol} right now`,
      };
    }
    return { connector };
  }

  function openFromAgent(agent: Session, message: OpenMessage): void {
    const { id, service, protocol } = message;
    const decision = authorizeOpen(agent, service, protocol);
    if (!("connector" in decision)) return refuse(agent, id, decision.reason, decision.message);
    const { connector } = decision;
    const connectorFlow = connector.nextFlow++;
    const pending: PendingOpen = {
      agent,
      agentRequest: id,
      service,
      protocol,
      connectorFlow,
      started: performance.now(),
      timer: setTimeout(() => {
        connector.pending.delete(connectorFlow);
        refuse(agent, id, "unavailable", "connector did not answer in time");
      }, OPEN_TIMEOUT_MS),
    };
    connector.pending.set(connectorFlow, pending);
    connector.channel.send({
      type: "open",
      id: connectorFlow,
      service,
      protocol,
      flow: connectorFlow,
      agent: agent.identity,
    });
  }

  function countPending(agent: Session): number {
    let n = 0;
    for (const s of sessions) for (const p of s.pending.values()) if (p.agent === agent) n++;
    return n;
  }

  function answerFromConnector(
    connector: Session,
    message: ControlMessage & { type: "opened" | "refused" },
  ): void {
    const pending = connector.pending.get(message.id);
    if (pending === undefined) return; // answered after our timeout: nothing waits for it
    connector.pending.delete(message.id);
    clearTimeout(pending.timer);
    const { agent } = pending;
    if (message.type === "refused") {
      return refuse(agent, pending.agentRequest, message.reason, message.message);
    }
    if (agent.conn.closed) {
      connector.channel.send({ type: "close", flow: pending.connectorFlow, reason: "agent gone" });
      return;
    }
    // A reload may have revoked the permission while the connector was answering.
    if (!policy.mayOpen(agent.identity, pending.service)) {
      connector.channel.send({ type: "close", flow: pending.connectorFlow, reason: "forbidden" });
      metrics.authFailures.inc({ reason: "open_forbidden" });
      return refuse(agent, pending.agentRequest, "forbidden", "policy changed");
    }
    const agentFlow = agent.nextFlow++;
    const flow: Flow = {
      service: pending.service,
      protocol: pending.protocol,
      agent: { session: agent, flow: agentFlow },
      connector: { session: connector, flow: pending.connectorFlow },
    };
    agent.flows.set(agentFlow, flow);
    connector.flows.set(pending.connectorFlow, flow);
    metrics.flowsOpened.inc({ protocol: flowKey(flow.protocol) });
    metrics.flowsActive.inc({ protocol: flowKey(flow.protocol) });
    metrics.flowSetup.observe((performance.now() - pending.started) / 1000);
    agent.channel.send({ type: "opened", id: pending.agentRequest, flow: agentFlow });
  }

  /**
   * Ends a flow named by `session`'s flow id; tells the other end when `notify`. `cause` is
   * the bounded metric label (the peer's `reason` text is not).
   */
  function closeFlow(
    session: Session,
    flowId: number,
    reason: string,
    notify: boolean,
    cause: "peer_close" | "disconnect" | "policy" = "peer_close",
  ): void {
    const flow = session.flows.get(flowId);
    if (flow === undefined) return;
    flow.agent.session.flows.delete(flow.agent.flow);
    flow.connector.session.flows.delete(flow.connector.flow);
    metrics.flowsActive.dec({ protocol: flowKey(flow.protocol) });
    metrics.flowsClosed.inc({ reason: cause });
    if (!notify) return;
    const other = flow.agent.session === session ? flow.connector : flow.agent;
    other.session.channel.send({ type: "close", flow: other.flow, reason });
  }

  function forwardDatagram(session: Session, frame: Uint8Array): void {
    const view = parseDatagram(frame, frame.length);
    if (view === null) {
      metrics.drops.inc({ reason: "malformed" });
      return;
    }
    const flow = session.flows.get(view.flow);
    if (flow === undefined) {
      metrics.drops.inc({ reason: "unknown_flow" });
      return;
    }
    const toConnector = flow.agent.session === session;
    const to = toConnector ? flow.connector : flow.agent;
    const length = rewriteFlow(frame, frame.length, to.flow, scratch);
    const direction = toConnector ? "to_connector" : "to_agent";
    if (!to.session.conn.sendDatagram(scratch.subarray(0, length))) {
      metrics.drops.inc({ reason: "queue_full" });
      return;
    }
    metrics.datagramsRelayed.inc({ direction });
    metrics.bytesRelayed.inc({ direction }, view.bodyEnd - view.bodyOffset);
  }

  function endSession(session: Session, reason: string): void {
    if (!sessions.delete(session)) return;
    tcp.peerClosed(session);
    for (const flowId of [...session.flows.keys()]) {
      closeFlow(session, flowId, "peer disconnected", true, "disconnect");
    }
    for (const pending of session.pending.values()) {
      clearTimeout(pending.timer);
      refuse(pending.agent, pending.agentRequest, "unavailable", "connector disconnected");
    }
    for (const other of sessions) {
      for (const [flow, pending] of other.pending) {
        if (pending.agent !== session) continue;
        clearTimeout(pending.timer);
        other.pending.delete(flow);
      }
    }
    for (const service of registry.removeSession(session)) announce(service, "service_down");
    metrics.servicesRegistered.set(registry.size);
    if (session.role !== null) {
      metrics.connectionsActive.dec({ role: session.role });
      session.log.info("peer disconnected", { role: session.role, reason });
    }
  }

  function peerAddress(session: Session): string {
    const { host, port } = session.conn.peer;
    return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  }

  function flowCount(): number {
    let n = 0;
    for (const s of sessions) if (s.role === "agent") n += s.flows.size;
    return n + tcp.count();
  }

  return {
    addr: server.addr,
    health() {
      const roles = { connector: 0, agent: 0 };
      for (const s of sessions) if (s.role !== null) roles[s.role]++;
      return {
        role: "relay",
        connections: roles,
        services: registry.services(),
        flows: flowCount(),
      };
    },
    setPolicy(services) {
      const agents = [...sessions].filter((s) => s.role === "agent");
      const visible = (agent: Session) =>
        new Set(policy.servicesFor(agent.identity).filter((name) => registry.has(name)));
      const before = new Map(agents.map((agent) => [agent, visible(agent)]));
      policy = createPolicy(services);
      policyServices = services;
      // Registrations the new policy forbids are withdrawn (announced below, per agent).
      for (const session of sessions) {
        if (session.role !== "connector") continue;
        const forbidden = [...session.offers]
          .map((offer) => offer.split("/")[0])
          .filter((name) => !policy.mayRegister(session.identity, name));
        if (forbidden.length > 0) deregister(session, forbidden, false);
      }
      metrics.servicesRegistered.set(registry.size);
      // Zero trust: a flow lives only while both of its ends are still allowed.
      let closed = 0;
      for (const agent of agents) {
        for (const [flowId, flow] of [...agent.flows]) {
          if (
            policy.mayOpen(agent.identity, flow.service) &&
            policy.mayRegister(flow.connector.session.identity, flow.service)
          ) continue;
          const reason = "no longer allowed by policy";
          agent.channel.send({ type: "close", flow: flowId, reason });
          closeFlow(agent, flowId, reason, true, "policy");
          closed++;
        }
        const after = visible(agent);
        for (const name of before.get(agent)!) {
          if (!after.has(name)) agent.channel.send({ type: "service_down", service: name });
        }
        for (const name of after) {
          if (!before.get(agent)!.has(name)) {
            agent.channel.send({ type: "service_up", service: name });
          }
        }
      }
      closed += tcp.revoke((agent, service, connector) =>
        policy.mayOpen(agent.identity, service) &&
        policy.mayRegister(connector.identity, service)
      );
      logger.info("policy applied", {
        services: Object.keys(services).length,
        flows_closed: closed,
      });
    },
    setTls(tls) {
      server.setTls(tls);
    },
    setTokens(tokens) {
      auth.setTokens(tokens);
    },
    async drain(drainMs) {
      draining = true;
      server.stopAccepting();
      for (const session of sessions) session.channel.send({ type: "draining", reconnect_ms: 0 });
      const deadline = Date.now() + drainMs;
      while (Date.now() < deadline && flowCount() > 0) {
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const session of sessions) session.conn.close(CloseCode.NO_ERROR, "relay shutting down");
      const closeDeadline = Date.now() + 2000;
      while (Date.now() < closeDeadline && [...server.connections].some((c) => !c.closed)) {
        await new Promise((r) => setTimeout(r, 20));
      }
      server.close();
    },
  };
}
