/**
 * The agent's Prometheus metrics (prefix `ztna_agent_`).
 *
 * @module
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** Every metric the agent updates. */
export interface AgentMetrics {
  relayConnected: Gauge;
  reconnects: Counter;
  servicesDown: Gauge;
  flowsActive: Gauge<"protocol">;
  flowsOpened: Counter<"protocol">;
  flowRefusals: Counter<"reason">;
  datagrams: Counter<"direction">;
  bytes: Counter<"direction">;
  drops: Counter<"reason">;
  flowSetup: Histogram;
}

/** Registers the agent's metrics on `registry`. */
export function createAgentMetrics(registry: Registry): AgentMetrics {
  const registers = [registry];
  const p = "ztna_agent_";
  return {
    relayConnected: new Gauge({
      name: `${p}relay_connected`,
      help: "1 while the agent holds an authenticated session with a relay.",
      registers,
    }),
    reconnects: new Counter({
      name: `${p}reconnects_total`,
      help: "Dials to a relay after the first one (reconnections and failovers).",
      registers,
    }),
    servicesDown: new Gauge({
      name: `${p}services_down`,
      help: "Services the relay announced as down (no connector); new flows to them fail fast.",
      registers,
    }),
    flowsActive: new Gauge({
      name: `${p}flows_active`,
      help: "Open flows, by protocol.",
      labelNames: ["protocol"],
      registers,
    }),
    flowsOpened: new Counter({
      name: `${p}flows_opened_total`,
      help: "Flows opened through the relay, by protocol.",
      labelNames: ["protocol"],
      registers,
    }),
    flowRefusals: new Counter({
      name: `${p}flow_refusals_total`,
      help: "Flow open requests the relay refused, by reason.",
      labelNames: ["reason"],
      registers,
    }),
    datagrams: new Counter({
      name: `${p}datagrams_total`,
      help: "UDP payloads forwarded, by direction (to_relay, from_relay).",
      labelNames: ["direction"],
      registers,
    }),
    bytes: new Counter({
      name: `${p}bytes_total`,
      help: "UDP payload bytes forwarded, by direction.",
      labelNames: ["direction"],
      registers,
    }),
    drops: new Counter({
      name: `${p}drops_total`,
      help: "Payloads dropped, by reason.",
      labelNames: ["reason"],
      registers,
    }),
    flowSetup: new Histogram({
      name: `${p}flow_setup_seconds`,
      help: "Time from the first packet of a local client to the relay's opened answer.",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
  };
}
