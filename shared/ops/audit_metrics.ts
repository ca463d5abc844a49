/**
 * The audit log's metrics, the same for every component: records written by event and
 * records dropped by reason, read from the log's running totals at scrape time.
 *
 * @module
 */
import { Counter, type Registry } from "prom-client";
import { AUDIT_EVENTS, type AuditLog } from "../audit_log.ts";

/**
 * Registers `<prefix>audit_records_total{event}` and `<prefix>audit_dropped_total{reason}`
 * on `registry`; every series exists from the start.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { Registry } from "prom-client";
 * import { createAuditLog } from "../audit_log.ts";
 * import { registerAuditMetrics } from "./audit_metrics.ts";
 *
 * const registry = new Registry();
 * const audit = createAuditLog({ component: "agent", destination: { kind: "off" } });
 * registerAuditMetrics(registry, "ztna_agent_", audit);
 * const text = await registry.metrics();
 * assert.match(text, /ztna_agent_audit_dropped_total\{reason="queue_full"\} 0/);
 * ```
 *
 * @param registry Where to register.
 * @param prefix The component's metric prefix, e.g. `ztna_relay_`.
 * @param audit The audit log whose totals are exported.
 */
export function registerAuditMetrics(registry: Registry, prefix: string, audit: AuditLog): void {
  const exported = { written: {} as Record<string, number>, dropped: {} as Record<string, number> };
  const sync = (
    counter: Counter<string>,
    label: string,
    totals: Readonly<Record<string, number>>,
    seen: Record<string, number>,
  ) => {
    for (const [value, total] of Object.entries(totals)) {
      const delta = total - (seen[value] ?? 0);
      if (delta > 0) counter.inc({ [label]: value }, delta);
      seen[value] = total;
    }
  };
  const records = new Counter({
    name: `${prefix}audit_records_total`,
    help: "Audit records handed to the audit destination, by event.",
    labelNames: ["event"],
    registers: [registry],
    collect() {
      sync(this, "event", audit.written, exported.written);
    },
  });
  const dropped = new Counter({
    name: `${prefix}audit_dropped_total`,
    help: "Audit records dropped: queue_full (the writer fell behind) or write_error " +
      "(the destination failed).",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      sync(this, "reason", audit.dropped, exported.dropped);
    },
  });
  for (const event of AUDIT_EVENTS) records.inc({ event }, 0);
  for (const reason of ["queue_full", "write_error"]) dropped.inc({ reason }, 0);
}
