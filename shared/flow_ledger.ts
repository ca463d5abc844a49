/**
 * The flow ledger: every open flow of a component with its byte and packet counts, and the
 * audit records of its life (`flow_open`, `flow_refused`, `flow_close`). The relay, the
 * connector and the agent each keep one; the relay also reads per-service totals from it for
 * its metrics and its status page.
 *
 * Counting is two additions on the flow's entry ({@linkcode countFlow}); everything else
 * happens when a flow opens or closes.
 *
 * @module
 */
import type { AuditLog } from "./audit_log.ts";
import type { ServiceProtocol } from "./protocol/control.ts";

/** Payload bytes and packets of a flow (or a service), each way. */
export interface FlowTotals {
  /** Towards the service: what the agent's local client sent. */
  bytesToService: number;
  /** Back towards the agent: what the backend answered. */
  bytesToAgent: number;
  /** UDP: datagrams; TCP: chunks of the byte stream (about one per socket read). */
  packetsToService: number;
  packetsToAgent: number;
}

/** One open flow. */
export interface FlowEntry extends FlowTotals {
  /** The flow id on this component's side. */
  readonly id: number;
  readonly service: string;
  readonly protocol: ServiceProtocol;
  /** When it opened (Unix ms). */
  readonly since: number;
  /** The audit fields of this flow (identity, addresses, ...), repeated in its close. */
  readonly fields: Readonly<Record<string, unknown>>;
}

/** What {@linkcode FlowLedger.open} needs. */
export interface FlowOpenInfo {
  id: number;
  service: string;
  protocol: ServiceProtocol;
  /** Audit fields of the flow, e.g. `{ identity, peer, rule }`. */
  fields: Record<string, unknown>;
  /** Fields of the `flow_open` record only (e.g. the trace id of its setup). */
  openFields?: Record<string, unknown>;
}

/** A component's flow ledger. */
export interface FlowLedger {
  /** Records a flow as open and writes `flow_open`. */
  open(info: FlowOpenInfo): FlowEntry;
  /** Writes `flow_close` with duration, totals and `reason`; a second call does nothing. */
  close(entry: FlowEntry, reason: string, fields?: Record<string, unknown>): void;
  /** Writes `flow_refused` for an open that never became a flow. */
  refused(
    info: { service: string; protocol: ServiceProtocol; reason: string } & Record<string, unknown>,
  ): void;
  /** The open flows. */
  readonly live: ReadonlySet<FlowEntry>;
  /** Totals per service since start: closed flows plus the open ones now. */
  serviceTotals(): Map<string, FlowTotals>;
}

/**
 * Adds one packet of `bytes` payload bytes to a flow, towards the service or the agent.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { countFlow, createFlowLedger } from "./flow_ledger.ts";
 * import { createAuditLog } from "./audit_log.ts";
 *
 * const ledger = createFlowLedger(createAuditLog({ component: "agent", destination: { kind: "off" } }));
 * const flow = ledger.open({ id: 1, service: "dns", protocol: "udp", fields: {} });
 * countFlow(flow, true, 40);
 * countFlow(flow, false, 120);
 * assert.deepEqual(ledger.serviceTotals().get("dns"), {
 *   bytesToService: 40, bytesToAgent: 120, packetsToService: 1, packetsToAgent: 1,
 * });
 * ```
 *
 * @param entry The flow.
 * @param toService True for the agent → service direction.
 * @param bytes Payload bytes of the packet.
 * @param packets Packets they came in.
 */
export function countFlow(entry: FlowTotals, toService: boolean, bytes: number, packets = 1): void {
  if (toService) {
    entry.bytesToService += bytes;
    entry.packetsToService += packets;
  } else {
    entry.bytesToAgent += bytes;
    entry.packetsToAgent += packets;
  }
}

/** Totals of nothing yet. */
export function emptyTotals(): FlowTotals {
  return { bytesToService: 0, bytesToAgent: 0, packetsToService: 0, packetsToAgent: 0 };
}

/** Adds `from` into `into` (e.g. a closed flow into its agent's totals). */
export function addTotals(into: FlowTotals, from: FlowTotals): void {
  into.bytesToService += from.bytesToService;
  into.bytesToAgent += from.bytesToAgent;
  into.packetsToService += from.packetsToService;
  into.packetsToAgent += from.packetsToAgent;
}

/**
 * Creates a flow ledger writing to `audit`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createAuditLog } from "./audit_log.ts";
 * import { createFlowLedger } from "./flow_ledger.ts";
 *
 * const lines: string[] = [];
 * const audit = createAuditLog({
 *   component: "relay",
 *   destination: { kind: "stdout" },
 *   sink: { write: async (b) => void lines.push(new TextDecoder().decode(b)), close() {} },
 * });
 * const ledger = createFlowLedger(audit, () => 5000);
 * const flow = ledger.open({ id: 7, service: "echo", protocol: "udp", fields: { identity: "a" } });
 * ledger.close(flow, "idle");
 * await audit.flush();
 * const close = JSON.parse(lines.join("").trim().split("\n")[1]);
 * assert.equal(close.audit, "flow_close");
 * assert.equal(close.identity, "a");
 * assert.equal(close.duration_ms, 0);
 * ```
 *
 * @param audit Where the records go.
 * @param now Clock (Unix ms).
 * @returns The ledger.
 */
export function createFlowLedger(
  audit: Pick<AuditLog, "write">,
  now: () => number = Date.now,
): FlowLedger {
  const live = new Set<FlowEntry>();
  const closed = new Map<string, FlowTotals>();

  return {
    open(info) {
      const entry: FlowEntry = {
        id: info.id,
        service: info.service,
        protocol: info.protocol,
        since: now(),
        fields: info.fields,
        ...emptyTotals(),
      };
      live.add(entry);
      audit.write("flow_open", {
        ...info.fields,
        service: info.service,
        protocol: info.protocol,
        flow: info.id,
        ...info.openFields,
      });
      return entry;
    },
    close(entry, reason, fields) {
      if (!live.delete(entry)) return;
      let totals = closed.get(entry.service);
      if (totals === undefined) closed.set(entry.service, totals = emptyTotals());
      addTotals(totals, entry);
      audit.write("flow_close", {
        ...entry.fields,
        service: entry.service,
        protocol: entry.protocol,
        flow: entry.id,
        reason,
        duration_ms: now() - entry.since,
        bytes_to_service: entry.bytesToService,
        bytes_to_agent: entry.bytesToAgent,
        packets_to_service: entry.packetsToService,
        packets_to_agent: entry.packetsToAgent,
        ...fields,
      });
    },
    refused(info) {
      audit.write("flow_refused", info);
    },
    live,
    serviceTotals() {
      const totals = new Map<string, FlowTotals>();
      for (const [service, sum] of closed) totals.set(service, { ...sum });
      for (const entry of live) {
        let sum = totals.get(entry.service);
        if (sum === undefined) totals.set(entry.service, sum = emptyTotals());
        addTotals(sum, entry);
      }
      return totals;
    },
  };
}
