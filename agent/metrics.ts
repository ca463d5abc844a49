/**
 * The agent's Prometheus metrics (prefix `ztna_agent_`).
 *
 * @module
 */
import { createEdgeMetrics, type EdgeMetrics } from "../shared/ops/edge_metrics.ts";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** Every metric the agent updates. */
export interface AgentMetrics extends EdgeMetrics {
  relayConnected: Gauge;
  servicesDown: Gauge;
  flowRefusals: Counter<"reason">;
  flowSetup: Histogram;
}

/** Registers the agent's metrics on `registry`. */
export function createAgentMetrics(registry: Registry): AgentMetrics {
  const registers = [registry];
  const p = "ztna_agent_";
  return {
    ...createEdgeMetrics(registry, p, "to_relay, from_relay"),
    relayConnected: new Gauge({
      name: `${p}relay_connected`,
      help: "1 while the agent holds an authenticated session with a relay.",
      registers,
    }),
    servicesDown: new Gauge({
      name: `${p}services_down`,
      help: "Services the relay announced as down (no connector); new flows to them fail fast.",
      registers,
    }),
    flowRefusals: new Counter({
      name: `${p}flow_refusals_total`,
      help: "Flow open requests the relay refused, by reason.",
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
