/**
 * The relay's Prometheus metrics (prefix `ztna_relay_`). Label values are bounded sets:
 * roles, reasons, protocols, directions and the services of the policy; never addresses,
 * identities or flow ids.
 *
 * @module
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { FlowTotals } from "../shared/flow_ledger.ts";

/** Every metric the relay updates. */
export interface RelayMetrics {
  connectionsAccepted: Counter<"role">;
  connectionsActive: Gauge<"role">;
  handshakeFailures: Counter<"reason">;
  authFailures: Counter<"reason">;
  registrations: Counter<"result">;
  servicesRegistered: Gauge;
  flowsOpened: Counter<"protocol">;
  flowsActive: Gauge<"protocol">;
  flowsClosed: Counter<"reason">;
  flowRefusals: Counter<"reason">;
  limitHits: Counter<"limit">;
  datagramsRelayed: Counter<"direction">;
  bytesRelayed: Counter<"direction">;
  drops: Counter<"reason">;
  protocolViolations: Counter<"reason">;
  packetsDropped: Counter<"reason">;
  flowSetup: Histogram;
  policyDecision: Histogram;
  serviceConnectors: Gauge<"service">;
  preauthConnections: Gauge<"stage">;
  preauthCloses: Counter<"reason">;
  statelessAnswers: Counter<"kind">;
  channelsActive: Gauge;
  channelPackets: Counter<"direction">;
  channelBytes: Counter<"direction">;
  channelDrops: Counter<"reason">;
  channelsOpened: Counter<"service">;
  channelsClosed: Counter;
}

/** Figures the relay keeps as plain numbers and the registry reads at scrape time. */
export interface RelayMetricSources {
  /** Packets the QUIC endpoint dropped, by reason (running totals). */
  packetDrops: () => Record<string, number>;
  /** Connectors currently serving each service of the policy. */
  serviceConnectors: () => Record<string, number>;
  /** Live pre-auth connections by stage (`handshake`, `hello`). */
  preauth: () => Record<string, number>;
  /** Pre-auth connections the endpoint closed, by reason (running totals). */
  preauthCloses: () => Record<string, number>;
  /** Packets answered without connection state, by kind (running totals). */
  statelessAnswers: () => Record<string, number>;
  /** Payload bytes and packets per service of the policy (running totals). */
  serviceTraffic: () => Record<string, FlowTotals>;
  /** Live channels. */
  channels: () => number;
  /** Channel packets forwarded, by direction (running totals). */
  channelPackets: () => Record<string, number>;
  /** Channel payload bytes forwarded, by direction (running totals). */
  channelBytes: () => Record<string, number>;
  /** Channel packets dropped, by reason (running totals). */
  channelDrops: () => Record<string, number>;
}

/**
 * A counter whose values come from running totals kept as plain numbers (the QUIC endpoint
 * counts on its hot path): each scrape adds what grew since the last one.
 */
function totalsCounter<L extends string>(
  registers: Registry[],
  name: string,
  help: string,
  label: L,
  totals: () => Record<string, number>,
): Counter<L> {
  const exported: Record<string, number> = {};
  return new Counter({
    name,
    help,
    labelNames: [label],
    registers,
    collect() {
      addTotals(this, label, totals(), exported);
    },
  });
}

/** Adds to `counter` what each of `totals` grew since `exported` (updated in place). */
function addTotals<L extends string>(
  counter: Counter<L>,
  label: L,
  totals: Record<string, number>,
  exported: Record<string, number>,
): void {
  for (const [value, total] of Object.entries(totals)) {
    const delta = total - (exported[value] ?? 0);
    if (delta > 0) counter.inc({ [label]: value } as Record<L, string>, delta);
    exported[value] = total;
  }
}

/**
 * Counters `<name>{service,direction}` fed from per-service running totals at scrape time:
 * the data path adds to plain numbers on each flow, never to a labelled series.
 */
function serviceTrafficCounters(
  registers: Registry[],
  traffic: () => Record<string, FlowTotals>,
): void {
  const exported = new Map<string, number>();
  const make = (
    name: string,
    help: string,
    pick: (t: FlowTotals, toConnector: boolean) => number,
  ) =>
    new Counter({
      name,
      help,
      labelNames: ["service", "direction"],
      registers,
      collect() {
        for (const [service, totals] of Object.entries(traffic())) {
          for (const toConnector of [true, false]) {
            const direction = toConnector ? "to_connector" : "to_agent";
            const key = `${name}|${service}|${direction}`;
            const total = pick(totals, toConnector);
            const delta = total - (exported.get(key) ?? 0);
            // inc(0) too: a service of the policy has its series before its first flow.
            if (delta >= 0) this.inc({ service, direction }, delta);
            exported.set(key, total);
          }
        }
      },
    });
  make(
    "ztna_relay_service_bytes_total",
    "Payload bytes of flows per service of the policy, by direction (TCP: stream payload, " +
      "chunk framing not included).",
    (t, toConnector) => toConnector ? t.bytesToService : t.bytesToAgent,
  );
  make(
    "ztna_relay_service_packets_total",
    "Packets of flows per service of the policy, by direction (UDP: DATAGRAM frames; TCP: " +
      "stream chunks).",
    (t, toConnector) => toConnector ? t.packetsToService : t.packetsToAgent,
  );
}

/**
 * Registers the relay's metrics on `registry`. `packetDrops` is read at scrape time: the
 * QUIC endpoint counts its drops in plain numbers on the hot path.
 */
export function createRelayMetrics(
  registry: Registry,
  sources: RelayMetricSources,
): RelayMetrics {
  const { packetDrops, serviceConnectors } = sources;
  const registers = [registry];
  const p = "ztna_relay_";
  const exportedChannelPackets: Record<string, number> = {};
  const exportedChannelBytes: Record<string, number> = {};
  serviceTrafficCounters(registers, sources.serviceTraffic);
  return {
    connectionsAccepted: new Counter({
      name: `${p}connections_accepted_total`,
      help: "Authenticated connections accepted, by peer role (connector, agent).",
      labelNames: ["role"],
      registers,
    }),
    connectionsActive: new Gauge({
      name: `${p}connections_active`,
      help: "Live authenticated connections, by peer role (connector, agent).",
      labelNames: ["role"],
      registers,
    }),
    handshakeFailures: new Counter({
      name: `${p}handshake_failures_total`,
      help:
        "QUIC/TLS handshakes that did not complete, by reason (a TLS alert name such as unknown_ca, or timeout).",
      labelNames: ["reason"],
      registers,
    }),
    authFailures: new Counter({
      name: `${p}auth_failures_total`,
      help:
        "Authentication or authorization refusals, by reason (open_forbidden, register_forbidden, " +
        "no_identity, missing_token, bad_token).",
      labelNames: ["reason"],
      registers,
    }),
    registrations: new Counter({
      name: `${p}registrations_total`,
      help: "Service registrations by connectors, by result.",
      labelNames: ["result"],
      registers,
    }),
    servicesRegistered: new Gauge({
      name: `${p}services_registered`,
      help: "Services with at least one registered connector.",
      registers,
    }),
    flowsOpened: new Counter({
      name: `${p}flows_opened_total`,
      help: "Flows opened between an agent and a connector, by protocol.",
      labelNames: ["protocol"],
      registers,
    }),
    flowsActive: new Gauge({
      name: `${p}flows_active`,
      help: "Open flows, by protocol.",
      labelNames: ["protocol"],
      registers,
    }),
    flowsClosed: new Counter({
      name: `${p}flows_closed_total`,
      help: "Flows ended, by cause (peer_close, disconnect, policy).",
      labelNames: ["reason"],
      registers,
    }),
    limitHits: new Counter({
      name: `${p}limit_hits_total`,
      help: "Offenders shed by a limit (connections_per_identity, control_frames_per_second, " +
        "flows_per_connection, registrations_per_minute, handshakes_per_second_source, " +
        "handshakes_per_second_total).",
      labelNames: ["limit"],
      registers,
    }),
    flowRefusals: new Counter({
      name: `${p}flow_refusals_total`,
      help: "Flow open requests refused, by reason.",
      labelNames: ["reason"],
      registers,
    }),
    datagramsRelayed: new Counter({
      name: `${p}datagrams_relayed_total`,
      help: "Packets forwarded between agents and connectors, by direction (to_connector, " +
        "to_agent): end-to-end session packets through channels, and DATAGRAM frames of " +
        "flows the relay itself carries.",
      labelNames: ["direction"],
      registers,
      collect() {
        addTotals(this, "direction", sources.channelPackets(), exportedChannelPackets);
      },
    }),
    bytesRelayed: new Counter({
      name: `${p}bytes_relayed_total`,
      help: "Bytes forwarded between agents and connectors, by direction: end-to-end session " +
        "packets (encrypted) and payloads of DATAGRAM frames.",
      labelNames: ["direction"],
      registers,
      collect() {
        addTotals(this, "direction", sources.channelBytes(), exportedChannelBytes);
      },
    }),
    drops: new Counter({
      name: `${p}drops_total`,
      help: "DATAGRAM frames dropped, by reason (unknown_flow, malformed, queue_full, too_large: " +
        "wider than the far hop).",
      labelNames: ["reason"],
      registers,
    }),
    protocolViolations: new Counter({
      name: `${p}protocol_violations_total`,
      help: "Connections closed for breaking the control protocol, by reason.",
      labelNames: ["reason"],
      registers,
    }),
    packetsDropped: totalsCounter(
      registers,
      `${p}packets_dropped_total`,
      "UDP packets dropped before reaching a connection, by reason (malformed_header, " +
        "unsupported_version, unknown_connection, short_initial, bad_token, connection_limit, " +
        "preauth_limit, rejected_by_quic, not_accepting, rate_limited).",
      "reason",
      packetDrops,
    ),
    preauthCloses: totalsCounter(
      registers,
      `${p}preauth_closes_total`,
      "Connections closed before authenticating: past preauth_timeout_ms (timeout) or " +
        "evicted, oldest first, for a newcomer under preauth_connections (evicted).",
      "reason",
      sources.preauthCloses,
    ),
    statelessAnswers: totalsCounter(
      registers,
      `${p}stateless_answers_total`,
      "Packets answered without connection state: retry, version_negotiation, invalid_token.",
      "kind",
      sources.statelessAnswers,
    ),
    channelsOpened: new Counter({
      name: `${p}channels_opened_total`,
      help: "Channels opened (each carries one agent's end-to-end session with one connector), " +
        "by the service asked for.",
      labelNames: ["service"],
      registers,
    }),
    channelsClosed: new Counter({
      name: `${p}channels_closed_total`,
      help: "Channels removed (peer gone, closed by a peer, revoked by policy).",
      registers,
    }),
    channelsActive: new Gauge({
      name: `${p}channels_active`,
      help: "Live channels.",
      registers,
      collect() {
        this.set(sources.channels());
      },
    }),
    channelPackets: totalsCounter(
      registers,
      `${p}channel_packets_total`,
      "End-to-end session packets forwarded blind through channels, by direction (to_connector, " +
        "to_agent).",
      "direction",
      sources.channelPackets,
    ),
    channelBytes: totalsCounter(
      registers,
      `${p}channel_bytes_total`,
      "Bytes of end-to-end session packets (encrypted, channel header excluded) forwarded, by " +
        "direction.",
      "direction",
      sources.channelBytes,
    ),
    channelDrops: totalsCounter(
      registers,
      `${p}channel_drops_total`,
      "Channel packets dropped, by reason (malformed, unknown_channel, wrong_source: not from " +
        "the connection the id belongs to, rate_limited, too_large).",
      "reason",
      sources.channelDrops,
    ),
    preauthConnections: new Gauge({
      name: `${p}preauth_connections`,
      help: "Connections not yet authenticated, by stage: in the handshake (handshake), or " +
        "established and waiting for hello (hello).",
      labelNames: ["stage"],
      registers,
      collect() {
        for (const [stage, count] of Object.entries(sources.preauth())) this.set({ stage }, count);
      },
    }),
    serviceConnectors: new Gauge({
      name: `${p}service_connectors`,
      help: "Connectors registered for each service of the policy (0: the service is down).",
      labelNames: ["service"],
      registers,
      collect() {
        this.reset();
        for (const [service, count] of Object.entries(serviceConnectors())) {
          this.set({ service }, count);
        }
      },
    }),
    flowSetup: new Histogram({
      name: `${p}flow_setup_seconds`,
      help: "Time from an agent's open to the connector's answer.",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    policyDecision: new Histogram({
      name: `${p}policy_decision_seconds`,
      help: "Time to decide an agent's open: policy, flow limits and connector choice.",
      buckets: [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005],
      registers,
    }),
  };
}
