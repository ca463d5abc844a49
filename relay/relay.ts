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
import { type Logger, rateLimitedLog } from "../shared/log.ts";
import type {
  ControlMessage,
  OpenMessage,
  RefusedReason,
  ServiceProtocol,
} from "../shared/protocol/control.ts";
import {
  PRE_AUTH_MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  SESSION_GONE,
} from "../shared/protocol/control.ts";
import { parseDatagram, rewriteFlow } from "../shared/protocol/datagram.ts";
import { StreamCode } from "../shared/protocol/stream_header.ts";
import { varintLength, varintLengthAt } from "../shared/protocol/varint.ts";
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
import { createPolicy, type Policy, policyDiff } from "./policy.ts";
import { createHandshakeLimiter } from "./handshake_limiter.ts";
import { createPeerAuth } from "./peer_auth.ts";
import type { RelayTokens } from "../shared/config/tokens.ts";
import { createTokenBucket } from "../shared/token_bucket.ts";
import { createServiceRegistry } from "./registry.ts";
import { createAnnouncer } from "./announcer.ts";
import { createTcpFlows, type OpenDecision } from "./tcp_flows.ts";
import type { AuditLog } from "../shared/audit_log.ts";
import { formatHostPort } from "../shared/config/address.ts";
import {
  addTotals,
  countFlow,
  createFlowLedger,
  emptyTotals,
  type FlowEntry,
  type FlowTotals,
} from "../shared/flow_ledger.ts";
import type { FlowSpan, FlowTracer } from "../shared/trace.ts";
import { type RelayStatus, relayStatus } from "./status.ts";
import { type Channel, createChannels } from "./channels.ts";
import type { SessionOpenMessage } from "../shared/protocol/control.ts";
import { sendBufferBytesFor } from "../shared/quic/tls_config.ts";

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
  /** Its ledger entry: byte and packet counts, audit fields. */
  entry: FlowEntry;
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
  /** The relay's span of this open, ended by the connector's answer. */
  span: FlowSpan;
  /** The policy rule that allowed it. */
  rule: string;
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
  /**
   * Takes one register/deregister from this connector's budget: each may make the relay
   * announce to every allowed agent, so they cost more than other messages.
   */
  registrationBudget: () => boolean;
  /** Set once a limit closed this connection: later messages are ignored. */
  shed: boolean;
  /** When the handshake completed (Unix ms). */
  since: number;
  /** Totals of this agent's flows that have closed (open ones are in the ledger). */
  closedTotals: FlowTotals;
  /** A connector's process instance (`hello.instance`). */
  instance: string | undefined;
}

/** An agent's `session_open` waiting for the connector's `channel_ready`. */
interface PendingChannel {
  agent: Session;
  request: number;
  timer: ReturnType<typeof setTimeout>;
}

/** A running relay. */
export interface Relay {
  /** The bound QUIC address. */
  readonly addr: { host: string; port: number };
  /** Live state for `/health`. */
  health(): Record<string, unknown>;
  /** Services, connectors, agents and flows for `/status` (no secrets). */
  status(): RelayStatus;
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
  /** Where audit records go (docs/AUDIT.md). */
  audit: AuditLog;
  /** Spans of flow setup. */
  tracer: FlowTracer;
  /** True while the process drains (for `/status`). */
  draining?: () => boolean;
}

const OPEN_TIMEOUT_MS = 5000;
/** Characters of a peer's `error` text that reach the log. */
const MAX_LOGGED_DETAIL = 256;
/** Least time between two logged `error` messages of one connection. */
const ERROR_LOG_INTERVAL_MS = 5000;
/**
 * Bytes a forwarded frame's flow id may grow by in the rewrite (a 1-byte varint id becoming
 * a 4-byte one), taken off the far hop's limit when telling a sender its `max_datagram`.
 */
const FLOW_ID_GROWTH = 3;
const flowKey = (protocol: ServiceProtocol) => protocol;

/** Starts the relay described by `config`. */
export function startRelay(config: RelayConfig, deps: RelayDeps): Relay {
  const { logger } = deps;
  let policy: Policy = createPolicy(config.services);
  let policyServices = config.services;
  const registry = createServiceRegistry<Session>();
  const sessions = new Set<Session>();
  // Rewritten frames go here: as large as the biggest DATAGRAM frame quiche accepts (65536),
  // so no frame a peer can send overruns it. Frames that cannot pass the far hop are dropped
  // before the rewrite.
  const scratch = new Uint8Array(65_536 + 8);
  let draining = false;
  const errorLog = rateLimitedLog(ERROR_LOG_INTERVAL_MS);
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
    preauthTimeoutMs: config.limits.preauth_timeout_ms,
    maxPreauthPerIp: config.limits.preauth_connections_per_ip,
    maxPreauth: config.limits.preauth_connections,
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
    onChannelPacket: (packet, from) => channels.forward(packet, from),
  });
  // End-to-end sessions' packets: forwarded blind (relay/channels.ts).
  const channels = createChannels<Session>({
    socket: () => server.socket,
    packetsPerSecondPerIdentity: config.limits.channel_packets_per_second_per_identity,
    maxPacketBytes: sendBufferBytesFor(),
  });
  /** `session_open`s waiting for their connector, by channel. */
  const channelWaits = new Map<Channel<Session>, PendingChannel[]>();
  /** Audit fields and open time of each channel, for its `channel_close` record. */
  const channelRecords = new Map<
    Channel<Session>,
    { fields: Record<string, unknown>; since: number }
  >();
  const metrics = deps.metrics({
    packetDrops: () => ({ ...server.counters.drops }),
    preauth: () => ({ ...server.preauth() }),
    preauthCloses: () => ({
      timeout: server.counters.preauthTimeouts,
      evicted: server.counters.preauthEvictions,
    }),
    statelessAnswers: () => ({
      retry: server.counters.retries,
      version_negotiation: server.counters.versionNegotiations,
      invalid_token: server.counters.invalidTokenCloses,
    }),
    // Services of the current policy (a bounded label set), with how many connectors serve them.
    serviceConnectors: () =>
      Object.fromEntries(
        Object.keys(policyServices).map((name) => [name, registry.connectors(name)]),
      ),
    channels: () => channels.size,
    channelPackets: () => ({ ...channels.counters.packets }),
    channelBytes: () => ({ ...channels.counters.bytes }),
    channelDrops: () => ({ ...channels.counters.drops }),
    // Per-service traffic, for the services of the current policy only (bounded labels).
    serviceTraffic: () => {
      const totals = ledger.serviceTotals();
      return Object.fromEntries(
        Object.keys(policyServices).map((name) => [name, totals.get(name) ?? emptyTotals()]),
      );
    },
  });
  const relayId = config.id ?? formatHostPort(server.addr);
  // Every relay record names this relay; the ledger writes the flow records.
  const audit = (event: Parameters<AuditLog["write"]>[0], fields: Record<string, unknown>) =>
    deps.audit.write(event, { relay_id: relayId, ...fields });
  const ledger = createFlowLedger({ write: audit });
  // service_up/service_down, coalesced per agent and service (relay/announcer.ts).
  const announcer = createAnnouncer<Session>({
    agents: () => [...sessions].filter((s) => s.role === "agent"),
    visible: (agent, service) => policy.mayOpen(agent.identity, service) && registry.has(service),
    tell: (agent, type, service) =>
      agent.conn.guard("announce", () => agent.channel.send({ type, service })),
  });
  // TCP flows ride streams; they are authorized exactly like UDP opens (authorizeOpen).
  const tcp = createTcpFlows<Session>({
    authorize: (agent, service, span) => authorizeOpen(agent, service, "tcp", span),
    metrics,
    openTimeoutMs: OPEN_TIMEOUT_MS,
    ledger,
    tracer: deps.tracer,
    flowFields: (agent, connector, rule) => flowFields(agent, connector, rule),
    refused: (agent, service, reason, fields) =>
      ledger.refused({ ...agentFields(agent), service, protocol: "tcp", reason, ...fields }),
    closed: (agent, entry) => addTotals(agent.closedTotals, entry),
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
          audit("auth_failure", { reason: "no_identity", peer: addressOf(conn) });
          conn.close(CloseCode.FORBIDDEN, "certificate carries no identity");
          return;
        }
        session = startSession(conn, identity);
      },
      onDatagram(frame) {
        if (session !== null) forwardDatagram(session, frame);
      },
      onStreamReadable(streamId) {
        if (session === null) return conn.streamReset(streamId, StreamCode.PROTOCOL_VIOLATION);
        if (streamId === CONTROL_STREAM_ID) session.channel.readable();
        else if (session.role === "agent") tcp.agentReadable(session, streamId);
        else if (session.role === "connector") tcp.connectorReadable(session, streamId);
        else conn.streamReset(streamId, StreamCode.PROTOCOL_VIOLATION);
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
          const reason = handshakeFailureReason(info);
          metrics.handshakeFailures.inc({ reason });
          // A TLS alert is a refused credential (unknown CA, no certificate): worth a record.
          // Timeouts and resets are not authentication and would let scanners fill the log.
          if (!["timeout", "closed", "transport_error"].includes(reason)) {
            audit("auth_failure", { reason: `tls_${reason}`, peer: addressOf(conn) });
          }
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
      registrationBudget: createTokenBucket({
        perSecond: config.limits.registrations_per_minute / 60,
        burst: config.limits.registrations_per_minute,
      }),
      shed: false,
      since: Date.now(),
      closedTotals: emptyTotals(),
      instance: undefined,
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
        audit("auth_failure", {
          reason: result.failure,
          role: message.role,
          peer: peerAddress(session),
          ...(session.identity === "" ? {} : { identity: session.identity }),
        });
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
      if (message.role === "connector") session.instance = message.instance;
      server.authenticated(session.conn);
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
    if (
      (message.type === "register" || message.type === "deregister") &&
      session.role === "connector" && !session.registrationBudget()
    ) {
      return shed(session, "registrations_per_minute", {
        per_minute: config.limits.registrations_per_minute,
      });
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
      case "session_open":
        if (onlyFor(session, "agent", message.type)) openChannel(session, message);
        return;
      case "channel_ready":
        if (onlyFor(session, "connector", message.type)) channelReady(session, message.channel);
        return;
      case "channel_closed": {
        const channel = channels.byId(session, message.channel);
        // A connector's "the session is gone" reaches the agent as it is; other reasons are
        // the peer's text, not passed on.
        const reason = message.reason === SESSION_GONE ? SESSION_GONE : "closed by peer";
        if (channel !== undefined) closeChannel(channel, reason, session);
        return;
      }
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
        // Bounded: a peer's text is truncated, and at most one line per connection per
        // interval is written (a flood of 64 KiB errors once wrote 15 MiB of log in 4 s).
        errorLog(session.conn.id, (suppressed) =>
          session.log.warn("peer reported an error", {
            code: message.code.slice(0, 64),
            detail: message.message.slice(0, MAX_LOGGED_DETAIL),
            truncated: message.message.length > MAX_LOGGED_DETAIL,
            suppressed,
          }));
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
      if (protocol === "udp" && session.conn.maxDatagramSize() === null) {
        rejected.push({ name, reason: "unsupported" });
        metrics.registrations.inc({ result: "unsupported" });
        session.log.warn("UDP registration refused: connection has no DATAGRAM frames", {
          service: name,
        });
        continue;
      }
      session.offers.add(`${name}/${protocol}`);
      if (registry.add(name, protocol, session)) announcer.changed(name);
      if (!accepted.includes(name)) accepted.push(name);
      metrics.registrations.inc({ result: "accepted" });
    }
    session.retiring = false;
    metrics.servicesRegistered.set(registry.size);
    audit("register", {
      identity: session.identity,
      role: "connector",
      peer: peerAddress(session),
      services: accepted,
      rejected,
      rules: Object.fromEntries(
        services.map(({ name }) => [name, policy.ruleFor("connector", name)]),
      ),
    });
    session.channel.send({ type: "registered", services: accepted, rejected });
    session.log.info("services registered", { services: accepted, rejected: rejected.length });
  }

  function deregister(session: Session, services: string[] | undefined, notify = true): void {
    for (const offer of [...session.offers]) {
      const [name, protocol] = offer.split("/") as [string, ServiceProtocol];
      if (services !== undefined && !services.includes(name)) continue;
      session.offers.delete(offer);
      if (registry.remove(name, protocol, session) && notify) announcer.changed(name);
    }
    if (services === undefined) session.retiring = true;
    metrics.servicesRegistered.set(registry.size);
    audit("deregister", {
      identity: session.identity,
      role: "connector",
      peer: peerAddress(session),
      services: services ?? "all",
      // A reload's withdrawal is the relay's doing, not the connector's.
      cause: notify ? "connector" : "policy",
    });
    session.log.info("services deregistered", { services: services ?? "all" });
  }

  /**
   * Answers an agent's UDP open with `refused`; counts it, writes `flow_refused` and ends the
   * open's span.
   */
  function refuse(
    session: Session,
    id: number,
    reason: RefusedReason,
    message: string,
    about: { service: string; rule?: string; span: FlowSpan },
  ): void {
    metrics.flowRefusals.inc({ reason });
    ledger.refused({
      ...agentFields(session),
      service: about.service,
      protocol: "udp",
      reason,
      detail: message,
      rule: about.rule,
      ...about.span.logFields,
    });
    about.span.end(reason);
    session.channel.send({ type: "refused", id, reason, message });
  }

  /**
   * Policy, flow limit and connector choice for an agent's open: one rule for UDP and TCP.
   * Timed as `ztna_relay_policy_decision_seconds` and traced as two children of `span`.
   */
  function authorizeOpen(
    agent: Session,
    service: string,
    protocol: ServiceProtocol,
    span: FlowSpan,
  ): OpenDecision<Session> {
    const started = performance.now();
    const decision = decide(agent, service, protocol, span);
    metrics.policyDecision.observe((performance.now() - started) / 1000);
    return decision;
  }

  function decide(
    agent: Session,
    service: string,
    protocol: ServiceProtocol,
    span: FlowSpan,
  ): OpenDecision<Session> {
    if (draining) return { reason: "draining", message: "relay is draining; reconnect elsewhere" };
    const rule = policy.ruleFor("agent", service);
    if (!policyAllows(agent, service, rule, span, "flow")) {
      return { reason: "forbidden", message: forbiddenText(agent, service), rule };
    }
    if (protocol === "udp" && agent.conn.maxDatagramSize() === null) {
      return {
        reason: "unsupported",
        message: "peer did not negotiate QUIC DATAGRAM frames",
        rule,
      };
    }
    const flows = agent.flows.size + countPending(agent) + tcp.count(agent);
    if (flows >= config.limits.flows_per_connection) {
      metrics.limitHits.inc({ limit: "flows_per_connection" });
      return {
        reason: "limit",
        message: `at most ${config.limits.flows_per_connection} flows`,
        rule,
      };
    }
    const choiceSpan = span.child("relay.connector_choice");
    const connector = registry.pick(service, protocol, (s) => !s.retiring);
    if (connector === undefined) {
      choiceSpan.end("no connector");
      return {
        reason: registry.has(service) ? "unavailable" : "unknown_service",
        message: `no connector serves ${service} over ${protocol} right now`,
        rule,
      };
    }
    choiceSpan.set({ "ztna.connector": connector.identity });
    choiceSpan.end();
    return { connector, rule };
  }

  /**
   * Whether the policy lets `agent` use `service`, traced as `relay.policy_decision` under
   * `span`; a refusal is counted and logged (`what` names what was asked for).
   */
  function policyAllows(
    agent: Session,
    service: string,
    rule: string,
    span: FlowSpan,
    what: "flow" | "session",
  ): boolean {
    const policySpan = span.child("relay.policy_decision", { "ztna.rule": rule });
    const allowed = policy.mayOpen(agent.identity, service);
    policySpan.set({ "ztna.allowed": allowed });
    policySpan.end(allowed ? undefined : "forbidden");
    if (!allowed) {
      metrics.authFailures.inc({ reason: "open_forbidden" });
      agent.log.warn(`${what} refused by policy`, { service, rule, ...span.logFields });
    }
    return allowed;
  }

  function forbiddenText(agent: Session, service: string): string {
    return `identity "${agent.identity}" may not use service "${service}"`;
  }

  function openFromAgent(agent: Session, message: OpenMessage): void {
    const { id, service, protocol } = message;
    const span = deps.tracer.start("relay.flow_open", {
      parent: message.traceparent,
      attributes: {
        "ztna.service": service,
        "ztna.protocol": protocol,
        "ztna.agent": agent.identity,
      },
    });
    const decision = authorizeOpen(agent, service, protocol, span);
    if (!("connector" in decision)) {
      return refuse(agent, id, decision.reason, decision.message, {
        service,
        rule: decision.rule,
        span,
      });
    }
    const { connector, rule } = decision;
    const connectorFlow = connector.nextFlow++;
    const pending: PendingOpen = {
      agent,
      agentRequest: id,
      service,
      protocol,
      connectorFlow,
      started: performance.now(),
      span,
      rule,
      timer: setTimeout(() =>
        agent.conn.guard("open timeout", () => {
          connector.pending.delete(connectorFlow);
          refuse(agent, id, "unavailable", "connector did not answer in time", pending);
        }), OPEN_TIMEOUT_MS),
    };
    connector.pending.set(connectorFlow, pending);
    agent.log.debug("flow open sent to connector", {
      service,
      connector: connector.identity,
      ...span.logFields,
    });
    connector.channel.send({
      type: "open",
      id: connectorFlow,
      service,
      protocol,
      flow: connectorFlow,
      agent: agent.identity,
      ...datagramLimit(protocol, agent),
      ...(span.traceparent === undefined ? {} : { traceparent: span.traceparent }),
    });
  }

  /**
   * `max_datagram` for a UDP flow's sender: the largest frame the relay can forward to `far`
   * (its connection's DATAGRAM limit, less what the flow-id rewrite may add), so the sender
   * fragments by the smaller of both hops. Nothing for TCP, or before `far` can carry any.
   */
  function datagramLimit(protocol: ServiceProtocol, far: Session): { max_datagram?: number } {
    const writable = protocol === "udp" ? far.conn.maxDatagramSize() : null;
    return writable === null ? {} : { max_datagram: Math.max(0, writable - FLOW_ID_GROWTH) };
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
      return refuse(agent, pending.agentRequest, message.reason, message.message, pending);
    }
    if (agent.conn.closed) {
      pending.span.end("agent gone");
      connector.channel.send({ type: "close", flow: pending.connectorFlow, reason: "agent gone" });
      return;
    }
    // A reload may have revoked the permission of either end while the connector answered.
    if (
      !policy.mayOpen(agent.identity, pending.service) ||
      !policy.mayRegister(connector.identity, pending.service)
    ) {
      connector.channel.send({ type: "close", flow: pending.connectorFlow, reason: "forbidden" });
      metrics.authFailures.inc({ reason: "open_forbidden" });
      return refuse(agent, pending.agentRequest, "forbidden", "policy changed", pending);
    }
    const agentFlow = agent.nextFlow++;
    const flow: Flow = {
      service: pending.service,
      protocol: pending.protocol,
      agent: { session: agent, flow: agentFlow },
      connector: { session: connector, flow: pending.connectorFlow },
      entry: ledger.open({
        id: agentFlow,
        service: pending.service,
        protocol: pending.protocol,
        fields: flowFields(agent, connector, pending.rule),
        openFields: pending.span.logFields,
      }),
    };
    pending.span.set({ "ztna.flow": agentFlow });
    pending.span.end();
    agent.log.debug("flow opened", {
      service: pending.service,
      flow: agentFlow,
      connector: connector.identity,
      ...pending.span.logFields,
    });
    agent.flows.set(agentFlow, flow);
    connector.flows.set(pending.connectorFlow, flow);
    metrics.flowsOpened.inc({ protocol: flowKey(flow.protocol) });
    metrics.flowsActive.inc({ protocol: flowKey(flow.protocol) });
    metrics.flowSetup.observe((performance.now() - pending.started) / 1000);
    agent.channel.send({
      type: "opened",
      id: pending.agentRequest,
      flow: agentFlow,
      ...datagramLimit(flow.protocol, connector),
    });
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
    ledger.close(flow.entry, cause, { detail: reason });
    addTotals(flow.agent.session.closedTotals, flow.entry);
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
    const outLength = frame.length - varintLengthAt(frame, 0) + varintLength(to.flow);
    const limit = to.session.conn.maxDatagramSize();
    // A frame the far hop cannot carry (the sender ignored `max_datagram`) is the sender's
    // fault, not a full queue: counted apart, and never written past the scratch buffer.
    if (limit === null || outLength > limit) {
      metrics.drops.inc({ reason: "too_large" });
      return;
    }
    const length = rewriteFlow(frame, frame.length, to.flow, scratch);
    const direction = toConnector ? "to_connector" : "to_agent";
    if (!to.session.conn.sendDatagram(scratch.subarray(0, length))) {
      metrics.drops.inc({ reason: "queue_full" });
      return;
    }
    metrics.datagramsRelayed.inc({ direction });
    metrics.bytesRelayed.inc({ direction }, view.bodyEnd - view.bodyOffset);
    countFlow(flow.entry, toConnector, view.bodyEnd - view.bodyOffset);
  }

  /**
   * The services of `connector` that `agent` may reach through a channel: those it offers
   * that policy lets the agent open and the connector serve.
   */
  function grantFor(agent: Session, connector: Session): string[] {
    const names = new Set([...connector.offers].map((offer) => offer.split("/")[0]));
    return [...names].filter((name) =>
      policy.mayOpen(agent.identity, name) && policy.mayRegister(connector.identity, name)
    ).sort();
  }

  /**
   * An agent's `session_open`: policy and connector choice as for a flow, then a channel (or
   * the one this session already has through this relay), announced to the connector; the
   * agent hears `session_opened` once the connector is ready.
   */
  function openChannel(agent: Session, message: SessionOpenMessage): void {
    const { id, service } = message;
    const rule = policy.ruleFor("agent", service);
    // The flow setup that needed this session continues its trace here (docs/OPERATIONS.md).
    const span = deps.tracer.start("relay.session_open", {
      parent: message.traceparent,
      attributes: { "ztna.service": service, "ztna.agent": agent.identity },
    });
    const refuseChannel = (reason: RefusedReason, text: string) => {
      metrics.flowRefusals.inc({ reason });
      audit("flow_refused", {
        ...agentFields(agent),
        service,
        reason,
        detail: text,
        rule,
        ...span.logFields,
      });
      span.end(reason);
      agent.channel.send({ type: "refused", id, reason, message: text });
    };
    if (draining) return refuseChannel("draining", "relay is draining; reconnect elsewhere");
    const started = performance.now();
    const allowed = policyAllows(agent, service, rule, span, "session");
    metrics.policyDecision.observe((performance.now() - started) / 1000);
    if (!allowed) return refuseChannel("forbidden", forbiddenText(agent, service));
    // Only connectors that said `hello.instance` speak channels; others never hear `channel`.
    const usable = (s: Session) =>
      !s.retiring && s.instance !== undefined &&
      (message.connector === undefined || s.instance === message.connector);
    const choiceSpan = span.child("relay.connector_choice");
    const connector = registry.pick(service, "tcp", usable) ??
      registry.pick(service, "udp", usable);
    choiceSpan.set({ "ztna.connector": connector?.identity ?? "" });
    choiceSpan.end(connector === undefined ? "no connector" : undefined);
    if (connector === undefined) {
      return refuseChannel(
        registry.has(service) ? "unavailable" : "unknown_service",
        message.connector === undefined
          ? `no connector serves ${service} right now`
          : `connector instance ${message.connector} is not connected here`,
      );
    }
    let channel = channels.find(agent, connector, message.session);
    if (channel === undefined) {
      if (channels.of(agent).length >= config.limits.channels_per_connection) {
        metrics.limitHits.inc({ limit: "channels_per_connection" });
        return refuseChannel("limit", `at most ${config.limits.channels_per_connection} channels`);
      }
      channel = channels.open(agent, connector, message.session, grantFor(agent, connector));
      metrics.channelsOpened.inc({ service });
      agent.log.info("channel opened", {
        service,
        connector: connector.identity,
        ...span.logFields,
      });
      const fields = { ...flowFields(agent, connector, rule), channel: channel.agent.id };
      channelRecords.set(channel, { fields, since: Date.now() });
      audit("channel_open", {
        ...fields,
        service,
        services: [...channel.services],
        session: message.session,
        ...span.logFields,
      });
    } else channel.services = new Set(grantFor(agent, connector));
    span.set({ "ztna.connector": connector.identity });
    span.end();
    const waits = channelWaits.get(channel) ?? [];
    channelWaits.set(channel, waits);
    const opened = channel;
    waits.push({
      agent,
      request: id,
      timer: setTimeout(() =>
        agent.conn.guard("channel timeout", () => {
          const left = channelWaits.get(opened)?.filter((w) =>
            w.request !== id || w.agent !== agent
          );
          if (left === undefined) return;
          channelWaits.set(opened, left);
          refuseChannel("unavailable", "connector did not answer in time");
          // A channel its connector never took up holds a slot of the agent's for nothing.
          if (!opened.ready && left.length === 0) closeChannel(opened, "connector did not answer");
        }), OPEN_TIMEOUT_MS),
    });
    announceChannel(channel);
  }

  function announceChannel(channel: Channel<Session>): void {
    channel.connector.session.channel.send({
      type: "channel",
      channel: channel.connector.id,
      agent: channel.agent.session.identity,
      session: channel.session,
      services: [...channel.services],
    });
  }

  function channelReady(connector: Session, id: number): void {
    const channel = channels.byId(connector, id);
    if (channel === undefined) return;
    channel.ready = true;
    const waits = channelWaits.get(channel) ?? [];
    channelWaits.delete(channel);
    for (const wait of waits) {
      clearTimeout(wait.timer);
      wait.agent.channel.send({
        type: "session_opened",
        id: wait.request,
        channel: channel.agent.id,
        connector: connector.identity,
        instance: connector.instance!,
        services: [...channel.services],
      });
    }
  }

  /** Removes a channel and tells its sides (except `by`, which closed it) why. */
  function closeChannel(channel: Channel<Session>, reason: string, by?: Session): void {
    // Once only: a revocation and a disconnect may both reach the same channel.
    if (!channels.close(channel)) return;
    const opened = channelRecords.get(channel);
    channelRecords.delete(channel);
    if (opened !== undefined) {
      audit("channel_close", {
        ...opened.fields,
        reason,
        duration_ms: Date.now() - opened.since,
        packets_to_connector: channel.toConnector.packets,
        bytes_to_connector: channel.toConnector.bytes,
        packets_to_agent: channel.toAgent.packets,
        bytes_to_agent: channel.toAgent.bytes,
      });
    }
    for (const wait of channelWaits.get(channel) ?? []) clearTimeout(wait.timer);
    channelWaits.delete(channel);
    metrics.channelsClosed.inc();
    for (const side of [channel.agent, channel.connector]) {
      if (side.session === by || side.session.conn.closed) continue;
      side.session.conn.guard(
        "channel close",
        () => side.session.channel.send({ type: "channel_closed", channel: side.id, reason }),
      );
    }
  }

  function endSession(session: Session, reason: string): void {
    if (!sessions.delete(session)) return;
    tcp.peerClosed(session);
    for (const channel of channels.of(session)) closeChannel(channel, "peer disconnected", session);
    for (const flowId of [...session.flows.keys()]) {
      closeFlow(session, flowId, "peer disconnected", true, "disconnect");
    }
    for (const pending of session.pending.values()) {
      clearTimeout(pending.timer);
      refuse(
        pending.agent,
        pending.agentRequest,
        "unavailable",
        "connector disconnected",
        pending,
      );
    }
    for (const other of sessions) {
      for (const [flow, pending] of other.pending) {
        if (pending.agent !== session) continue;
        clearTimeout(pending.timer);
        pending.span.end("agent gone");
        other.pending.delete(flow);
      }
    }
    if (session.role === "connector" && session.offers.size > 0) {
      // Its registrations end with the connection: the record says so, as for a deregister.
      audit("deregister", {
        identity: session.identity,
        role: "connector",
        peer: peerAddress(session),
        services: [...new Set([...session.offers].map((offer) => offer.split("/")[0]))],
        cause: "disconnect",
      });
    }
    for (const service of registry.removeSession(session)) announcer.changed(service);
    announcer.forget(session);
    metrics.servicesRegistered.set(registry.size);
    if (session.role !== null) {
      metrics.connectionsActive.dec({ role: session.role });
      session.log.info("peer disconnected", { role: session.role, reason });
    }
  }

  function peerAddress(session: Session): string {
    return addressOf(session.conn);
  }

  /** The audit fields naming an agent. */
  function agentFields(agent: Session): Record<string, unknown> {
    return { identity: agent.identity, role: "agent", peer: peerAddress(agent) };
  }

  /** The audit fields of a flow: both ends and the rule that allowed it. */
  function flowFields(agent: Session, connector: Session, rule: string): Record<string, unknown> {
    return {
      ...agentFields(agent),
      connector: connector.identity,
      connector_peer: peerAddress(connector),
      rule,
    };
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
    status() {
      return relayStatus({
        relayId,
        draining: draining || (deps.draining?.() ?? false),
        services: Object.keys(policyServices),
        sessions: [...sessions].filter((s) => s.role !== null).map((s) => ({
          role: s.role!,
          identity: s.identity,
          peer: peerAddress(s),
          since: s.since,
          offers: [...s.offers].map((offer) => offer.split("/")[0]),
          closedTotals: s.closedTotals,
        })),
        flows: [...ledger.live],
        channels: [...channelRecords].map(([channel, { since }]) => ({
          channel: channel.agent.id,
          agent: channel.agent.session.identity,
          agentPeer: peerAddress(channel.agent.session),
          connector: channel.connector.session.identity,
          services: [...channel.services],
          since,
          bytesToConnector: channel.toConnector.bytes,
          bytesToAgent: channel.toAgent.bytes,
        })),
        traffic: ledger.serviceTotals(),
        servicesRegistered: registry.size,
      });
    },
    setPolicy(services) {
      const previous = policyServices;
      policy = createPolicy(services);
      policyServices = services;
      // Each peer's part runs guarded: a failure with one peer closes that peer's connection
      // and the reload carries on for everyone else (one stopped control stream once made
      // the whole reload abort after installing the policy but before revoking any flow).
      let withdrawn = 0;
      let closed = 0;
      let failed = 0;
      for (const session of [...sessions]) {
        const done = session.conn.guard("policy reload", () => {
          if (session.role === "connector") {
            const forbidden = [...session.offers]
              .map((offer) => offer.split("/")[0])
              .filter((name) => !policy.mayRegister(session.identity, name));
            if (forbidden.length > 0) deregister(session, forbidden, false);
            withdrawn += forbidden.length;
          }
          if (session.role !== "agent") return true;
          // Zero trust: a flow lives only while both of its ends are still allowed.
          for (const [flowId, flow] of [...session.flows]) {
            if (
              policy.mayOpen(session.identity, flow.service) &&
              policy.mayRegister(flow.connector.session.identity, flow.service)
            ) continue;
            const reason = "no longer allowed by policy";
            session.channel.send({ type: "close", flow: flowId, reason });
            closeFlow(session, flowId, reason, true, "policy");
            closed++;
          }
          return true;
        });
        if (done !== true) failed++;
      }
      metrics.servicesRegistered.set(registry.size);
      // A channel carries what both ends are still allowed: none left closes it; a smaller
      // grant is announced to the connector, which closes the flows it no longer covers.
      for (const session of [...sessions]) {
        if (session.role !== "agent") continue;
        for (const channel of channels.of(session)) {
          const granted = grantFor(channel.agent.session, channel.connector.session);
          if (granted.length === 0) {
            // The connector hears the empty grant first: it ends the session's flows at once.
            channel.services = new Set();
            channel.connector.session.conn.guard("policy reload", () => announceChannel(channel));
            closeChannel(channel, "no longer allowed by policy");
            closed++;
          } else if (granted.join() !== [...channel.services].join()) {
            channel.services = new Set(granted);
            channel.connector.session.conn.guard("policy reload", () => announceChannel(channel));
          }
        }
      }
      closed += tcp.revoke((agent, service, connector) =>
        policy.mayOpen(agent.identity, service) &&
        policy.mayRegister(connector.identity, service)
      );
      // Opens still waiting for a connector are re-checked against both ends when it answers.
      // Agents hear what the new policy changed for them now, not at the coalescing pace.
      announcer.flushNow(
        new Set([...Object.keys(previous), ...Object.keys(services), ...registry.services()]),
      );
      logger.info("policy applied", {
        services: Object.keys(services).length,
        flows_closed: closed,
        registrations_withdrawn: withdrawn,
        peers_failed: failed,
      });
      audit("policy_reload", {
        ...policyDiff(previous, services),
        services: Object.keys(services).length,
        flows_closed: closed,
        registrations_withdrawn: withdrawn,
        peers_failed: failed,
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
      // Channels keep forwarding until their agents have moved to another relay.
      while (Date.now() < deadline && flowCount() + channels.size > 0) {
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

/** A connection's peer as `host:port` (`[v6]:port`). */
function addressOf(conn: QuicConnection): string {
  return formatHostPort(conn.peer);
}
