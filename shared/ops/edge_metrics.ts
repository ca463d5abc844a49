/**
 * The metrics the two edges of the tunnel (connector and agent) share: reconnects, flows,
 * payloads and drops. Each component adds its own beside them.
 *
 * @module
 */
import { Counter, Gauge, type Registry } from "prom-client";

/** Metrics common to the connector and the agent. */
export interface EdgeMetrics {
  reconnects: Counter;
  flowsActive: Gauge<"protocol">;
  flowsOpened: Counter<"protocol">;
  datagrams: Counter<"direction">;
  bytes: Counter<"direction">;
  drops: Counter<"reason">;
  sessionsActive: Gauge;
  sessionsOpened: Counter;
  sessionRefusals: Counter<"reason">;
  pathSwitches: Counter<"cause">;
  channelPackets: Counter<"outcome">;
}

/**
 * Registers `<prefix>reconnects_total`, `<prefix>flows_active`, `<prefix>flows_opened_total`,
 * `<prefix>datagrams_total`, `<prefix>bytes_total` and `<prefix>drops_total` on `registry`;
 * `directions` names the two values of the `direction` label, for the help text.
 */
export function createEdgeMetrics(
  registry: Registry,
  prefix: "ztna_connector_" | "ztna_agent_",
  directions: string,
): EdgeMetrics {
  const registers = [registry];
  return {
    reconnects: new Counter({
      name: `${prefix}reconnects_total`,
      help: "Dials to a relay after the first one (reconnections and failovers).",
      registers,
    }),
    flowsActive: new Gauge({
      name: `${prefix}flows_active`,
      help: "Open flows, by protocol.",
      labelNames: ["protocol"],
      registers,
    }),
    flowsOpened: new Counter({
      name: `${prefix}flows_opened_total`,
      help: "Flows opened, by protocol.",
      labelNames: ["protocol"],
      registers,
    }),
    datagrams: new Counter({
      name: `${prefix}datagrams_total`,
      help: `UDP payloads forwarded, by direction (${directions}).`,
      labelNames: ["direction"],
      registers,
    }),
    bytes: new Counter({
      name: `${prefix}bytes_total`,
      help: "UDP payload bytes forwarded, by direction.",
      labelNames: ["direction"],
      registers,
    }),
    drops: new Counter({
      name: `${prefix}drops_total`,
      help: "Payloads dropped, by reason (e.g. unknown_flow, malformed_stream, reassembly_*; " +
        "agent: service_down, refused, not_connected, draining, open_queue_full).",
      labelNames: ["reason"],
      registers,
    }),
    sessionsActive: new Gauge({
      name: `${prefix}sessions_active`,
      help: "End-to-end sessions (agent to connector, through relay channels) established now.",
      registers,
    }),
    sessionsOpened: new Counter({
      name: `${prefix}sessions_opened_total`,
      help: "End-to-end sessions whose handshake completed with the announced peer.",
      registers,
    }),
    sessionRefusals: new Counter({
      name: `${prefix}session_refusals_total`,
      help: "End-to-end sessions refused or failed before carrying flows, by reason " +
        "(identity_mismatch, handshake_timeout, handshake_failed, limit, not_initial, " +
        "unknown_channel, refused_by_relay).",
      labelNames: ["reason"],
      registers,
    }),
    pathSwitches: new Counter({
      name: `${prefix}path_switches_total`,
      help: "End-to-end sessions moved to another relay channel, by cause (dead, draining, " +
        "relay_closed, peer_moved, channel_closed).",
      labelNames: ["cause"],
      registers,
    }),
    channelPackets: new Counter({
      name: `${prefix}channel_packets_total`,
      help: "Channel packets (end-to-end QUIC packets and path keepalives) received from " +
        "relays, by outcome (accepted, or why dropped: unknown_channel, rejected, malformed).",
      labelNames: ["outcome"],
      registers,
    }),
  };
}
