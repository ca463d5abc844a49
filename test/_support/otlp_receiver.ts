/**
 * A small OTLP/HTTP receiver for tests: accepts `POST /v1/traces` (and `/v1/logs`,
 * `/v1/metrics`, answered and ignored) in the JSON encoding (`OTEL_EXPORTER_OTLP_PROTOCOL=
 * http/json`) on 127.0.0.1 and keeps every span it was sent.
 *
 * @module
 */

/** One received span, flattened. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** Empty for a root span. */
  parentSpanId: string;
  name: string;
  /** Instrumentation scope, e.g. `ztna-edge/relay`. */
  scope: string;
  /** `service.name` of the exporting process. */
  service: string;
  attributes: Record<string, unknown>;
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  status: number;
}

/** A running receiver. */
export interface OtlpReceiver {
  /** `http://127.0.0.1:PORT`, the value for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  readonly endpoint: string;
  readonly spans: ReceivedSpan[];
  /** Requests by path, with their content type. */
  readonly requests: { path: string; contentType: string }[];
  close(): Promise<void>;
}

type AnyValue = {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
};

function valueOf(value: AnyValue | undefined): unknown {
  if (value === undefined) return undefined;
  if ("stringValue" in value) return value.stringValue;
  if ("intValue" in value) return Number(value.intValue);
  if ("boolValue" in value) return value.boolValue;
  return value.doubleValue;
}

function attributesOf(list: { key: string; value: AnyValue }[] | undefined) {
  return Object.fromEntries((list ?? []).map(({ key, value }) => [key, valueOf(value)]));
}

/** Starts the receiver on an ephemeral loopback port. */
export function startOtlpReceiver(): OtlpReceiver {
  const spans: ReceivedSpan[] = [];
  const requests: { path: string; contentType: string }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    const contentType = req.headers.get("content-type") ?? "";
    requests.push({ path, contentType });
    const body = await req.text();
    if (path === "/v1/traces" && contentType.includes("json")) {
      const document = JSON.parse(body);
      for (const resourceSpans of document.resourceSpans ?? []) {
        const service = String(attributesOf(resourceSpans.resource?.attributes)["service.name"]);
        for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
          for (const span of scopeSpans.spans ?? []) {
            spans.push({
              traceId: span.traceId,
              spanId: span.spanId,
              parentSpanId: span.parentSpanId ?? "",
              name: span.name,
              scope: scopeSpans.scope?.name ?? "",
              service,
              attributes: attributesOf(span.attributes),
              status: span.status?.code ?? 0,
            });
          }
        }
      }
    }
    return new Response("{}", { headers: { "content-type": "application/json" } });
  });
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    spans,
    requests,
    close: () => server.shutdown(),
  };
}
