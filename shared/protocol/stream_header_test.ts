import assert from "node:assert/strict";
import { ProtocolError } from "./control.ts";
import {
  createStreamHeaderDecoder,
  encodeStreamHeader,
  MAX_STREAM_HEADER_BYTES,
  type StreamHeader,
} from "./stream_header.ts";

function decodeByteByByte(bytes: Uint8Array): StreamHeader | null {
  const decoder = createStreamHeaderDecoder();
  let result: StreamHeader | null = null;
  let offset = 0;
  while (decoder.wanted() > 0) {
    result = decoder.push(bytes.subarray(offset, offset + 1));
    offset++;
  }
  assert.equal(offset, bytes.length, "the decoder wants exactly the header");
  return result;
}

Deno.test("stream header: every header round-trips, one byte at a time", () => {
  const headers: StreamHeader[] = [
    { type: "open", service: "web", protocol: "tcp" },
    { type: "open", service: "db", protocol: "tcp", flow: 9 },
    { type: "opened", flow: 4 },
    { type: "refused", reason: "backend_error", message: "connection refused" },
  ];
  for (const header of headers) {
    assert.deepEqual(decodeByteByByte(encodeStreamHeader(header)), header);
  }
});

Deno.test("stream header: invalid input is a ProtocolError", () => {
  const frame = (body: string) => {
    const bytes = new TextEncoder().encode(body);
    return new Uint8Array([bytes.length >> 8, bytes.length & 0xff, ...bytes]);
  };
  const cases = [
    frame('{"type":"open","service":"web","protocol":"udp"}'),
    frame('{"type":"open","service":"Bad Name","protocol":"tcp"}'),
    frame('{"type":"opened","extra":1}'),
    frame("not json"),
    new Uint8Array([0, 0]),
    new Uint8Array([(MAX_STREAM_HEADER_BYTES + 1) >> 8, (MAX_STREAM_HEADER_BYTES + 1) & 0xff]),
  ];
  for (const bytes of cases) {
    assert.throws(() => decodeByteByByte(bytes), ProtocolError);
  }
  assert.throws(
    () => encodeStreamHeader({ type: "refused", reason: "limit", message: "x".repeat(600) }),
    ProtocolError,
  );
});

Deno.test("stream header: open may carry a traceparent, and need not", () => {
  const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const header: StreamHeader = { type: "open", service: "web", protocol: "tcp", traceparent };
  assert.deepEqual(decodeByteByByte(encodeStreamHeader(header)), header);
  const bare: StreamHeader = { type: "open", service: "web", protocol: "tcp" };
  assert.deepEqual(decodeByteByByte(encodeStreamHeader(bare)), bare);
});
