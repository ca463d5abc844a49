/**
 * The connector's Prometheus metrics (prefix `ztna_connector_`). Label values are bounded:
 * directions, reasons, protocols and configured service names.
 *
 * @module
 */
import { Counter, Gauge, type Registry } from "prom-client";

/** Every metric the connector updates. */
export interface ConnectorMetrics {
  relayConnectionsActive: Gauge;
  reconnects: Counter;
  registrations: Counter<"result">;
  flowsActive: Gauge<"protocol">;
  flowsOpened: Counter<"protocol">;
  datagrams: Counter<"direction">;
  bytes: Counter<"direction">;
  sourceValidationRejects: Counter<"service">;
  drops: Counter<"reason">;
  backendErrors: Counter<"reason">;
  circuitState: Gauge<"service">;
}

/** Registers the connector's metrics on `registry`. */
export function createConnectorMetrics(registry: Registry): ConnectorMetrics {
  const registers = [registry];
  const p = "ztna_connector_";
  return {
    relayConnectionsActive: new Gauge({
      name: `${p}relay_connections_active`,
      help: "Relays this connector holds an authenticated session with.",
      registers,
    }),
    reconnects: new Counter({
      name: `${p}reconnects_total`,
      help: "Dials to a relay after the first one (reconnections).",
      registers,
    }),
    registrations: new Counter({
      name: `${p}registrations_total`,
      help: "Service registrations answered by relays, by result.",
      labelNames: ["result"],
      registers,
    }),
    flowsActive: new Gauge({
      name: `${p}flows_active`,
      help: "Open flows to backends, by protocol.",
      labelNames: ["protocol"],
      registers,
    }),
    flowsOpened: new Counter({
      name: `${p}flows_opened_total`,
      help: "Flows opened to backends, by protocol.",
      labelNames: ["protocol"],
      registers,
    }),
    datagrams: new Counter({
      name: `${p}datagrams_total`,
      help: "UDP payloads forwarded, by direction (to_backend, from_backend).",
      labelNames: ["direction"],
      registers,
    }),
    bytes: new Counter({
      name: `${p}bytes_total`,
      help: "UDP payload bytes forwarded, by direction.",
      labelNames: ["direction"],
      registers,
    }),
    sourceValidationRejects: new Counter({
      name: `${p}source_validation_rejects_total`,
      help: "Datagrams on a backend socket from an address other than the service's, dropped.",
      labelNames: ["service"],
      registers,
    }),
    drops: new Counter({
      name: `${p}drops_total`,
      help: "Payloads dropped, by reason.",
      labelNames: ["reason"],
      registers,
    }),
    backendErrors: new Counter({
      name: `${p}backend_errors_total`,
      help: "Failures talking to backends, by reason.",
      labelNames: ["reason"],
      registers,
    }),
    circuitState: new Gauge({
      name: `${p}circuit_state`,
      help: "TCP backend circuit breaker state per service: 0 closed, 1 half-open, 2 open.",
      labelNames: ["service"],
      registers,
    }),
  };
}
