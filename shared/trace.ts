/**
 * Traces of flow setup across the three hops, through Deno's built-in OpenTelemetry.
 *
 * Deno exports spans itself (OTLP/HTTP) when started with `OTEL_DENO=true`; the endpoint,
 * protocol and service name come from the standard `OTEL_*` variables, read by the runtime at
 * start. Without `OTEL_DENO` the tracer is OpenTelemetry's no-op: spans cost a few objects
 * and nothing is exported, so tracing is off by default.
 *
 * The hops pass the W3C `traceparent` of their span in the open messages (control `open`,
 * stream `open` header); the next hop starts its span as that one's child. A parent that is
 * missing or malformed (the field is peer input) is ignored and the span starts a new trace.
 *
 * @module
 */
import {
  isSpanContextValid,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
} from "@opentelemetry/api";

/** The parts of a W3C `traceparent` header (version 00). */
export interface TraceParent {
  /** 32 lowercase hex digits, not all zero. */
  traceId: string;
  /** 16 lowercase hex digits, not all zero. */
  spanId: string;
  /** The sampled flag. */
  sampled: boolean;
}

/** Longest `traceparent` accepted in a message: version 00 is 55 characters. */
export const MAX_TRACEPARENT_LENGTH = 55;

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

/**
 * Parses a W3C `traceparent` (version 00); null for anything else, including all-zero ids.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTraceparent } from "./trace.ts";
 *
 * const parent = parseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
 * assert.deepEqual(parent, {
 *   traceId: "0af7651916cd43dd8448eb211c80319c",
 *   spanId: "b7ad6b7169203331",
 *   sampled: true,
 * });
 * assert.equal(parseTraceparent("00-" + "0".repeat(32) + "-b7ad6b7169203331-01"), null);
 * ```
 *
 * @param text The header value, possibly absent.
 * @returns The parsed parent, or null.
 */
export function parseTraceparent(text: string | undefined): TraceParent | null {
  if (typeof text !== "string" || text.length !== MAX_TRACEPARENT_LENGTH) return null;
  const match = TRACEPARENT.exec(text);
  if (match === null || match[1] === ZERO_TRACE || match[2] === ZERO_SPAN) return null;
  return { traceId: match[1], spanId: match[2], sampled: (parseInt(match[3], 16) & 1) === 1 };
}

/**
 * Formats a `traceparent` (version 00).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatTraceparent } from "./trace.ts";
 *
 * assert.equal(
 *   formatTraceparent({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331", sampled: true }),
 *   "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
 * );
 * ```
 *
 * @param parent Trace id, span id and sampled flag.
 * @returns The header value.
 */
export function formatTraceparent(parent: TraceParent): string {
  return `00-${parent.traceId}-${parent.spanId}-${parent.sampled ? "01" : "00"}`;
}

/** Attribute values a flow span carries. */
export type SpanAttributes = Record<string, string | number | boolean | undefined>;

/** One span of a flow's setup. */
export interface FlowSpan {
  /** This span as a `traceparent` for the next hop; undefined when there is no trace. */
  readonly traceparent: string | undefined;
  /**
   * `{ trace_id, span_id }` for the log lines written inside this span; empty when the span
   * is not recorded (tracing off), so untraced log lines stay as they were.
   */
  readonly logFields: { trace_id?: string; span_id?: string };
  /** Starts a child span (e.g. the relay's policy decision inside its open). */
  child(name: string, attributes?: SpanAttributes): FlowSpan;
  /** Adds attributes. */
  set(attributes: SpanAttributes): void;
  /** Ends the span; with `error`, its status is ERROR with that message. Later calls do nothing. */
  end(error?: string): void;
}

/** Options for {@linkcode FlowTracer.start}. */
export interface StartSpanOptions {
  /** The previous hop's `traceparent` (peer input: validated, ignored when malformed). */
  parent?: string;
  /** The span kind. @default {"server"} */
  kind?: "client" | "server" | "internal";
  attributes?: SpanAttributes;
}

/** Starts the spans of one component. */
export interface FlowTracer {
  start(name: string, options?: StartSpanOptions): FlowSpan;
}

const KINDS = { client: SpanKind.CLIENT, server: SpanKind.SERVER, internal: SpanKind.INTERNAL };

function clean(attributes: SpanAttributes | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [key, value] of Object.entries(attributes ?? {})) {
    if (value !== undefined) out[key] = value;
  }
  return out;
}

/**
 * The tracer of one component (instrumentation scope `ztna-edge/<component>`).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createFlowTracer } from "./trace.ts";
 *
 * // Without OTEL_DENO the tracer is a no-op: nothing to propagate, nothing to log.
 * const span = createFlowTracer("agent").start("flow_open", { kind: "client" });
 * assert.equal(span.traceparent, undefined);
 * assert.deepEqual(span.logFields, {});
 * span.end();
 * ```
 *
 * @param component The component whose spans these are.
 * @returns The tracer.
 */
export function createFlowTracer(component: "relay" | "connector" | "agent"): FlowTracer {
  const tracer = trace.getTracer(`ztna-edge/${component}`);

  function wrap(span: Span): FlowSpan {
    const spanContext = span.spanContext();
    const valid = isSpanContextValid(spanContext);
    const traceparent = valid
      ? formatTraceparent({
        traceId: spanContext.traceId,
        spanId: spanContext.spanId,
        sampled: (spanContext.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED,
      })
      : undefined;
    const logFields = valid && span.isRecording()
      ? { trace_id: spanContext.traceId, span_id: spanContext.spanId }
      : {};
    let ended = false;
    return {
      traceparent,
      logFields,
      child(name, attributes) {
        const parent = trace.setSpan(ROOT_CONTEXT, span);
        return wrap(tracer.startSpan(
          name,
          { kind: SpanKind.INTERNAL, attributes: clean(attributes) },
          parent,
        ));
      },
      set(attributes) {
        span.setAttributes(clean(attributes));
      },
      end(error) {
        if (ended) return;
        ended = true;
        if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
        span.end();
      },
    };
  }

  return {
    start(name, options = {}) {
      const parent = parseTraceparent(options.parent);
      // Explicit parents only: flow setup hops across callbacks, where an ambient context
      // would name whichever span happened to be active.
      const ctx = parent === null ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, {
        traceId: parent.traceId,
        spanId: parent.spanId,
        traceFlags: parent.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
        isRemote: true,
      });
      return wrap(tracer.startSpan(
        name,
        { kind: KINDS[options.kind ?? "server"], attributes: clean(options.attributes) },
        ctx,
      ));
    },
  };
}
