/**
 * The agent's side of flow audit and tracing, shared by its UDP and TCP forwards: the span
 * of an open (from the local client's first packet or accept to the relay's answer) and the
 * records of a refused open.
 *
 * @module
 */
import type { Logger } from "../shared/log.ts";
import type { FlowLedger } from "../shared/flow_ledger.ts";
import type { FlowSpan, FlowTracer } from "../shared/trace.ts";

/** The agent's audit fields of a local client: its address and the relay it goes through. */
export function localFields(local: string, relay: string | undefined): Record<string, unknown> {
  return { local, relay };
}

/** Starts the agent's span of one flow open, from the local client's first packet or accept. */
export function startOpenSpan(
  tracer: FlowTracer,
  service: string,
  protocol: "udp" | "tcp",
  local: string,
): FlowSpan {
  return tracer.start("agent.flow_open", {
    kind: "client",
    attributes: { "ztna.service": service, "ztna.protocol": protocol, "ztna.local": local },
  });
}

/** Records a refused open: audit, span status, one error line carrying the trace ids. */
export function openRefused(
  ledger: FlowLedger,
  logger: Logger,
  span: FlowSpan | null,
  about: { service: string; protocol: "udp" | "tcp"; local: string; relay: string },
  reason: string,
  detail: string,
): void {
  const traced = span?.logFields ?? {};
  ledger.refused({ ...about, reason, detail, ...traced });
  span?.end(reason);
  logger.error("relay refused flow", { service: about.service, reason, detail, ...traced });
}
