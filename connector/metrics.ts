/**
 * The connector's Prometheus metrics (prefix `ztna_connector_`). Label values are bounded:
 * directions, reasons, protocols and configured service names.
 *
 * @module
 */
import { createEdgeMetrics, type EdgeMetrics } from "../shared/ops/edge_metrics.ts";
import { Counter, Gauge, type Registry } from "prom-client";

/** Every metric the connector updates. */
export interface ConnectorMetrics extends EdgeMetrics {
  relayConnectionsActive: Gauge;
  registrations: Counter<"result">;
  sourceValidationRejects: Counter<"service">;
  backendErrors: Counter<"reason">;
  circuitState: Gauge<"service">;
  limitHits: Counter<"limit">;
  grantRefusals: Counter<"service">;
}

/** Registers the connector's metrics on `registry`. */
export function createConnectorMetrics(registry: Registry): ConnectorMetrics {
  const registers = [registry];
  const p = "ztna_connector_";
  return {
    ...createEdgeMetrics(registry, p, "to_backend, from_backend"),
    relayConnectionsActive: new Gauge({
      name: `${p}relay_connections_active`,
      help: "Relays this connector holds an authenticated session with.",
      registers,
    }),
    registrations: new Counter({
      name: `${p}registrations_total`,
      help: "Service registrations answered by relays, by result.",
      labelNames: ["result"],
      registers,
    }),
    sourceValidationRejects: new Counter({
      name: `${p}source_validation_rejects_total`,
      help: "Datagrams on a backend socket from an address other than the service's, dropped.",
      labelNames: ["service"],
      registers,
    }),
    backendErrors: new Counter({
      name: `${p}backend_errors_total`,
      help:
        "Failures talking to backends, by reason (connect_failed, circuit_open, not_permitted, " +
        "open_failed, or the socket operation that failed).",
      labelNames: ["reason"],
      registers,
    }),
    circuitState: new Gauge({
      name: `${p}circuit_state`,
      help: "TCP backend circuit breaker state per service: 0 closed, 1 half-open, 2 open.",
      labelNames: ["service"],
      registers,
    }),
    grantRefusals: new Counter({
      name: `${p}grant_refusals_total`,
      help: "Flow opens on an end-to-end session refused because neither the relay's grant " +
        "nor the `agents` allowlist lets the session's agent use the service, by service.",
      labelNames: ["service"],
      registers,
    }),
    limitHits: new Counter({
      name: `${p}limit_hits_total`,
      help:
        "Flow opens refused with reason limit: flows_per_agent, max_flows, open_files (EMFILE/ENFILE).",
      labelNames: ["limit"],
      registers,
    }),
  };
}
