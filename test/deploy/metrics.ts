/**
 * The metric names the components export (DESIGN.md "Metric names"), the contract that the
 * Grafana dashboard and the Prometheus alert rules in `deploy/` are checked against, and helpers to
 * find the metric names a PromQL expression references.
 *
 * @module
 */

/** Histograms: referenced in queries through their `_bucket`, `_sum` and `_count` series. */
export const HISTOGRAMS: ReadonlySet<string> = new Set([
  "ztna_relay_flow_setup_seconds",
  "ztna_relay_startup_seconds",
  "ztna_relay_shutdown_seconds",
  "ztna_agent_flow_setup_seconds",
  "ztna_relay_policy_decision_seconds",
]);

/** Every metric name a dashboard or rule may use, by the component that exports it. */
export const EXPORTED_METRICS: Readonly<Record<string, readonly string[]>> = {
  relay: [
    "ztna_relay_connections_accepted_total",
    "ztna_relay_connections_active",
    "ztna_relay_handshake_failures_total",
    "ztna_relay_auth_failures_total",
    "ztna_relay_registrations_total",
    "ztna_relay_services_registered",
    "ztna_relay_service_connectors",
    "ztna_relay_flows_opened_total",
    "ztna_relay_flows_active",
    "ztna_relay_flow_refusals_total",
    "ztna_relay_datagrams_relayed_total",
    "ztna_relay_bytes_relayed_total",
    "ztna_relay_drops_total",
    "ztna_relay_protocol_violations_total",
    "ztna_relay_flow_setup_seconds",
    "ztna_relay_startup_seconds",
    "ztna_relay_shutdown_seconds",
    "ztna_relay_ready_last_success_timestamp_seconds",
    "ztna_relay_draining",
    "ztna_relay_policy_decision_seconds",
    "ztna_relay_service_bytes_total",
    "ztna_relay_service_packets_total",
    "ztna_relay_audit_records_total",
    "ztna_relay_audit_dropped_total",
    "ztna_relay_channels_active",
    "ztna_relay_channels_opened_total",
  ],
  connector: [
    "ztna_connector_relay_connections_active",
    "ztna_connector_reconnects_total",
    "ztna_connector_registrations_total",
    "ztna_connector_flows_active",
    "ztna_connector_flows_opened_total",
    "ztna_connector_datagrams_total",
    "ztna_connector_bytes_total",
    "ztna_connector_source_validation_rejects_total",
    "ztna_connector_drops_total",
    "ztna_connector_backend_errors_total",
    "ztna_connector_circuit_state",
    "ztna_connector_audit_records_total",
    "ztna_connector_audit_dropped_total",
    "ztna_connector_sessions_active",
    "ztna_connector_session_refusals_total",
  ],
  agent: [
    "ztna_agent_relay_connected",
    "ztna_agent_reconnects_total",
    "ztna_agent_flows_active",
    "ztna_agent_flow_refusals_total",
    "ztna_agent_datagrams_total",
    "ztna_agent_drops_total",
    "ztna_agent_flow_setup_seconds",
    "ztna_agent_audit_records_total",
    "ztna_agent_audit_dropped_total",
    "ztna_agent_sessions_active",
    "ztna_agent_path_switches_total",
  ],
  common: [
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "nodejs_eventloop_lag_seconds",
    "ztna_build_info",
  ],
};

/** Series Prometheus itself adds to every target. */
const SYNTHETIC = new Set(["up", "scrape_duration_seconds", "scrape_samples_scraped"]);

/** PromQL functions, keywords and aggregation words that look like identifiers. */
const PROMQL_WORDS = new Set([
  "sum",
  "min",
  "max",
  "avg",
  "count",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "and",
  "or",
  "unless",
  "bool",
  "offset",
  "rate",
  "irate",
  "increase",
  "delta",
  "histogram_quantile",
  "time",
  "max_over_time",
  "min_over_time",
  "avg_over_time",
  "label_values",
  "abs",
  "clamp_min",
  "vector",
  "topk",
  "le",
]);

/**
 * The metric names a PromQL expression references (label matchers, label names in `by (...)`,
 * strings, durations and Grafana variables are skipped), with histogram suffixes removed.
 */
export function referencedMetrics(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, "{}")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "")
    .replace(/\[[^\]]*\]/g, "[]")
    .replace(/\$\w+/g, "");
  const names = new Set<string>();
  for (const [word] of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    if (PROMQL_WORDS.has(word)) continue;
    const base = word.replace(/_(bucket|sum|count)$/, "");
    names.add(HISTOGRAMS.has(base) ? base : word);
  }
  return [...names].sort();
}

/** Names in `names` that no component exports (and Prometheus does not synthesise). */
export function unknownMetrics(names: Iterable<string>): string[] {
  const known = new Set(Object.values(EXPORTED_METRICS).flat());
  return [...names].filter((name) => !known.has(name) && !SYNTHETIC.has(name));
}
