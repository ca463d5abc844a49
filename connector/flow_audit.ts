/**
 * The connector's side of flow audit and tracing, shared by its UDP and TCP flows: the span
 * of a backend connect (a child of the relay's open) and the audit fields of a flow.
 *
 * @module
 */
import type { FlowSpan, FlowTracer } from "../shared/trace.ts";

/** The connector's audit fields of a flow: the agent it is for, the backend, the relay. */
export function backendFields(
  agent: string | undefined,
  backend: string | undefined,
  relay: string,
): Record<string, unknown> {
  return { agent, backend, relay };
}

/** Starts the span of opening a flow's backend side, under the relay's `traceparent`. */
export function startBackendSpan(
  tracer: FlowTracer,
  service: string,
  protocol: "udp" | "tcp",
  agent: string | undefined,
  traceparent: string | undefined,
): FlowSpan {
  return tracer.start("connector.backend_connect", {
    parent: traceparent,
    attributes: { "ztna.service": service, "ztna.protocol": protocol, "ztna.agent": agent },
  });
}
