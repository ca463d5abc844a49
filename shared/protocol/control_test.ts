import assert from "node:assert/strict";
import {
  type ControlMessage,
  createControlDecoder,
  encodeControl,
  PROTOCOL_VERSION,
  ProtocolError,
} from "./control.ts";
import { seededRandom } from "./_test_utils.ts";

const samples: ControlMessage[] = [
  { type: "hello", v: PROTOCOL_VERSION, role: "connector", token: "t0ken" },
  { type: "hello", v: PROTOCOL_VERSION, role: "relay", identity: "spiffe://ztna/agent/alice" },
  {
    type: "register",
    services: [{ name: "dns", protocol: "udp" }, { name: "db.internal-1", protocol: "tcp" }],
  },
  { type: "registered", services: ["dns"], rejected: [{ name: "db", reason: "forbidden" }] },
  { type: "deregister" },
  { type: "deregister", services: ["dns"] },
  { type: "open", id: 0, service: "dns", protocol: "udp" },
  { type: "open", id: 12, service: "dns", protocol: "udp", flow: 2 ** 40 },
  { type: "opened", id: 12, flow: 7 },
  { type: "refused", id: 3, reason: "unknown_service", message: "no such service: x" },
  { type: "close", flow: 7 },
  { type: "close", flow: 7, reason: "idle" },
  { type: "service_down", service: "dns" },
  { type: "service_up", service: "dns" },
  { type: "draining", reconnect_ms: 3000 },
  { type: "ping", seq: 1 },
  { type: "pong", seq: 1 },
  { type: "error", code: "protocol_violation", message: "bad frame ünïcödé" },
];

function frame(body: string | Uint8Array): Uint8Array {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length);
  out.set(bytes, 4);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function assertProtocolError(fn: () => unknown, reason: ProtocolError["reason"]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${error}`);
    assert.equal(error.reason, reason);
    return true;
  });
}

Deno.test("encodeControl() writes a u32 BE length prefix and JSON body", () => {
  const bytes = encodeControl({ type: "ping", seq: 5 });
  const body = '{"type":"ping","seq":5}';
  assert.deepEqual([...bytes.subarray(0, 4)], [0, 0, 0, body.length]);
  assert.equal(new TextDecoder().decode(bytes.subarray(4)), body);
});

Deno.test("every message type round-trips in one push", () => {
  const decoder = createControlDecoder();
  for (const message of samples) assert.deepEqual(decoder.push(encodeControl(message)), [message]);
  assert.equal(decoder.buffered, 0);
});

Deno.test("multiple frames in one chunk decode in order", () => {
  const decoder = createControlDecoder();
  assert.deepEqual(decoder.push(concat(samples.map((m) => encodeControl(m)))), samples);
});

Deno.test("frames split byte by byte across pushes decode", () => {
  const decoder = createControlDecoder();
  const stream = concat(samples.map((m) => encodeControl(m)));
  const out: ControlMessage[] = [];
  let frameStart = 0;
  for (let i = 0; i < stream.length; i++) {
    const got = decoder.push(stream.subarray(i, i + 1));
    out.push(...got);
    if (got.length > 0) frameStart = i + 1;
    assert.equal(decoder.buffered, i + 1 - frameStart);
  }
  assert.deepEqual(out, samples);
  assert.equal(decoder.buffered, 0);
});

Deno.test("frames split at random points decode, and the caller may reuse its chunk", () => {
  const random = seededRandom(42);
  const stream = concat(samples.map((m) => encodeControl(m)));
  for (let round = 0; round < 50; round++) {
    const decoder = createControlDecoder();
    const out: ControlMessage[] = [];
    const reused = new Uint8Array(64);
    let offset = 0;
    while (offset < stream.length) {
      const take = Math.min(1 + Math.floor(random() * 60), stream.length - offset);
      reused.set(stream.subarray(offset, offset + take));
      out.push(...decoder.push(reused.subarray(0, take)));
      reused.fill(0xee);
      offset += take;
    }
    assert.deepEqual(out, samples);
  }
});

Deno.test("an oversized length prefix is rejected before its body arrives", () => {
  const decoder = createControlDecoder({ maxFrameBytes: 100 });
  assert.deepEqual(decoder.push(new Uint8Array([0, 0])), []);
  assertProtocolError(() => decoder.push(new Uint8Array([0, 101])), "oversized_frame");
  assert.equal(decoder.buffered, 0);
  // The decoder stays failed.
  assertProtocolError(
    () => decoder.push(encodeControl({ type: "ping", seq: 1 })),
    "oversized_frame",
  );

  const standard = createControlDecoder();
  assertProtocolError(() => standard.push(new Uint8Array([0, 1, 0, 1])), "oversized_frame");
  assert.deepEqual(
    createControlDecoder().push(
      frame(`{"type":"error","code":"x","message":"${"a".repeat(65490)}"}`),
    )
      .length,
    1,
  );
});

Deno.test("encodeControl() rejects messages over the frame limit and invalid ones", () => {
  const message: ControlMessage = { type: "error", code: "x", message: "a".repeat(200) };
  assertProtocolError(() => encodeControl(message, { maxFrameBytes: 100 }), "oversized_frame");
  assertProtocolError(
    () => encodeControl({ type: "ping", seq: -1 } as ControlMessage),
    "invalid_message",
  );
  assert.throws(() => encodeControl(message, { maxFrameBytes: 0 }), RangeError);
});

Deno.test("malformed JSON, invalid UTF-8 and empty frames are malformed_json", () => {
  for (
    const body of [
      "{",
      "not json",
      '{"type":"ping","seq":1}x',
      "",
      new Uint8Array([0x7b, 0xff, 0x7d]),
    ]
  ) {
    assertProtocolError(() => createControlDecoder().push(frame(body)), "malformed_json");
  }
});

Deno.test("wrong types, unknown types, extra keys and bad values are invalid_message", () => {
  const bodies = [
    "1",
    "null",
    "[]",
    '"hello"',
    "{}",
    '{"type":"nope"}',
    '{"type":"ping","seq":1,"extra":true}',
    '{"type":"ping","seq":"1"}',
    '{"type":"ping","seq":1.5}',
    '{"type":"ping","seq":-1}',
    '{"type":"ping","seq":9007199254740992}',
    '{"type":"hello","v":1,"role":"admin"}',
    `{"type":"hello","v":1,"role":"agent","token":"${"t".repeat(513)}"}`,
    '{"type":"register","services":[]}',
    '{"type":"register","services":[{"name":"Bad_Name","protocol":"udp"}]}',
    '{"type":"register","services":[{"name":"dns","protocol":"sctp"}]}',
    '{"type":"register","services":[{"name":"dns","protocol":"udp","port":53}]}',
    `{"type":"open","id":1,"service":"${"a".repeat(64)}","protocol":"udp"}`,
    '{"type":"refused","id":1,"reason":"because","message":""}',
    '{"type":"draining"}',
    '{"type":"__proto__","seq":1}',
    '{"__proto__":{"type":"ping"},"seq":1}',
  ];
  for (const body of bodies) {
    assertProtocolError(() => createControlDecoder().push(frame(body)), "invalid_message");
  }
  const services = Array.from({ length: 257 }, (_, i) => ({ name: `s${i}`, protocol: "udp" }));
  assertProtocolError(
    () => createControlDecoder().push(frame(JSON.stringify({ type: "register", services }))),
    "invalid_message",
  );
});

Deno.test("service names follow the pattern", () => {
  const decoder = createControlDecoder();
  for (const name of ["a", "0", "a.b-c_d", "a".repeat(63)]) {
    assert.equal(decoder.push(encodeControl({ type: "service_up", service: name })).length, 1);
  }
  for (const name of ["", ".a", "-a", "A", "a b", "a".repeat(64), "é"]) {
    assertProtocolError(
      () => encodeControl({ type: "service_up", service: name }),
      "invalid_message",
    );
  }
});

Deno.test("the decoder throws only ProtocolError on 2000 seeded random and mutated inputs", () => {
  const random = seededRandom(0xc0de);
  const valid = samples.map((m) => encodeControl(m));
  let errors = 0;
  let messages = 0;
  for (let i = 0; i < 2000; i++) {
    let input: Uint8Array;
    const mode = i % 3;
    if (mode === 0) {
      // Pure noise.
      input = new Uint8Array(Math.floor(random() * 256)).map(() => Math.floor(random() * 256));
    } else if (mode === 1) {
      // A valid frame with a few bytes of its body flipped (keeps a plausible prefix).
      input = valid[Math.floor(random() * valid.length)].slice();
      const flips = 1 + Math.floor(random() * 4);
      for (let f = 0; f < flips; f++) {
        input[4 + Math.floor(random() * (input.length - 4))] = Math.floor(random() * 256);
      }
    } else {
      // A correctly prefixed body of random printable JSON-ish characters.
      const alphabet = '{}[]":,0123456789.-+eEtrufalsn \\type"ping"seq';
      const text = Array.from(
        { length: Math.floor(random() * 80) },
        () => alphabet[Math.floor(random() * alphabet.length)],
      ).join("");
      input = frame(text);
    }
    const decoder = createControlDecoder({ maxFrameBytes: 1 + Math.floor(random() * 4096) });
    try {
      // Split in two pushes to exercise the buffering path as well.
      const cut = Math.floor(random() * (input.length + 1));
      messages += decoder.push(input.subarray(0, cut)).length;
      messages += decoder.push(input.subarray(cut)).length;
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      errors++;
    }
  }
  assert.ok(errors > 1000, `only ${errors} errors`);
  assert.ok(messages > 0, "some mutated frames should still be valid");
});

Deno.test("open: traceparent is optional, carried as given, and bounded", () => {
  const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const withIt: ControlMessage = {
    type: "open",
    id: 1,
    service: "echo",
    protocol: "udp",
    traceparent,
  };
  const without: ControlMessage = { type: "open", id: 2, service: "echo", protocol: "udp" };
  const decoder = createControlDecoder();
  assert.deepEqual(decoder.push(encodeControl(withIt)), [withIt]);
  assert.deepEqual(decoder.push(encodeControl(without)), [without]);
  // Malformed but short: the decoder accepts it (the tracer ignores it); too long is invalid.
  const odd = { ...without, traceparent: "not a traceparent" };
  assert.deepEqual(createControlDecoder().push(encodeControl(odd)), [odd]);
  const body = new TextEncoder().encode(
    JSON.stringify({ ...without, traceparent: "x".repeat(65) }),
  );
  const frame = new Uint8Array(4 + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, 4);
  assert.throws(() => createControlDecoder().push(frame), ProtocolError);
});
