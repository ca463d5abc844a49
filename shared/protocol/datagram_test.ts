import assert from "node:assert/strict";
import {
  type DatagramView,
  encodeFragments,
  encodeWhole,
  fragmentHeaderLength,
  frameCount,
  MAX_FRAGMENTS,
  parseDatagram,
  rewriteFlow,
  wholeHeaderLength,
} from "./datagram.ts";
import { seededRandom } from "./_test_utils.ts";

Deno.test("encodeWhole() then parseDatagram() yields flow, tag 0 and the payload bounds", () => {
  const out = new Uint8Array(128);
  const payload = new Uint8Array([10, 20, 30, 40]);
  for (const flow of [0, 63, 64, 16384, 2 ** 30, 2 ** 53 - 1]) {
    const len = encodeWhole(flow, payload, out);
    assert.equal(len, wholeHeaderLength(flow) + payload.length);
    const view = parseDatagram(out, len);
    assert.ok(view);
    assert.deepEqual(view, {
      flow,
      tag: 0,
      datagramId: 0,
      index: 0,
      count: 1,
      bodyOffset: wholeHeaderLength(flow),
      bodyEnd: len,
    });
    assert.deepEqual(out.subarray(view.bodyOffset, view.bodyEnd), payload);
  }
});

Deno.test("parseDatagram() accepts an empty whole payload", () => {
  const view = parseDatagram(new Uint8Array([5, 0]), 2);
  assert.equal(view?.bodyOffset, 2);
  assert.equal(view?.bodyEnd, 2);
});

Deno.test("parseDatagram() parses fragment fields", () => {
  const buf = new Uint8Array([0x40, 0x64, 1, 0x12, 0x34, 3, 5, 0xaa, 0xbb]);
  assert.deepEqual(parseDatagram(buf, buf.length), {
    flow: 100,
    tag: 1,
    datagramId: 0x1234,
    index: 3,
    count: 5,
    bodyOffset: 7,
    bodyEnd: 9,
  });
});

Deno.test("parseDatagram() fills a caller-provided view instead of allocating", () => {
  const into = {} as DatagramView;
  const buf = new Uint8Array([1, 0, 9]);
  assert.equal(parseDatagram(buf, 3, into), into);
  assert.equal(into.flow, 1);
});

Deno.test("parseDatagram() returns null for truncated inputs, bad tags and bad fragment fields", () => {
  const fragment = new Uint8Array([0x40, 0x64, 1, 0x12, 0x34, 0, 2, 0xaa]);
  // Every strict prefix up to the end of the fragment fields is malformed.
  for (let len = 0; len < 7; len++) assert.equal(parseDatagram(fragment, len), null, `len=${len}`);
  assert.ok(parseDatagram(fragment, 7), "fragment with an empty chunk still parses");
  assert.equal(parseDatagram(new Uint8Array([1]), 1), null, "flow id without tag");
  assert.equal(parseDatagram(new Uint8Array([0xc0, 0, 0, 0, 0, 0, 0, 1]), 8), null);
  for (const tag of [2, 3, 0x7f, 0xff]) {
    assert.equal(parseDatagram(new Uint8Array([1, tag, 0, 0, 0, 2]), 6), null, `tag=${tag}`);
  }
  // count 1, count 65, index == count.
  assert.equal(parseDatagram(new Uint8Array([1, 1, 0, 0, 0, 1, 9]), 7), null);
  assert.equal(parseDatagram(new Uint8Array([1, 1, 0, 0, 0, 65, 9]), 7), null);
  assert.equal(parseDatagram(new Uint8Array([1, 1, 0, 0, 2, 2, 9]), 7), null);
  assert.ok(parseDatagram(new Uint8Array([1, 1, 0, 0, 63, 64, 9]), 7));
  // Flow id 2^53 does not fit a number.
  assert.equal(parseDatagram(new Uint8Array([0xc0, 0x20, 0, 0, 0, 0, 0, 0, 0]), 9), null);
});

Deno.test("parseDatagram() rejects a len outside the buffer", () => {
  assert.throws(() => parseDatagram(new Uint8Array(4), 5), RangeError);
  assert.throws(() => parseDatagram(new Uint8Array(4), -1), RangeError);
});

Deno.test("rewriteFlow() changes the flow id, growing or shrinking its varint", () => {
  const payload = new Uint8Array([1, 2, 3, 4, 5]);
  const src = new Uint8Array(64);
  const out = new Uint8Array(64);
  const pairs: [number, number][] = [[5, 300], [300, 5], [63, 2 ** 40], [2 ** 40, 0], [7, 9]];
  for (const [from, to] of pairs) {
    const len = encodeWhole(from, payload, src);
    const outLen = rewriteFlow(src, len, to, out);
    assert.equal(outLen, len - wholeHeaderLength(from) + wholeHeaderLength(to));
    const view = parseDatagram(out, outLen)!;
    assert.equal(view.flow, to);
    assert.deepEqual(out.subarray(view.bodyOffset, view.bodyEnd), payload);
  }
});

Deno.test("rewriteFlow() keeps fragment fields and works in place", () => {
  const buf = new Uint8Array(32);
  buf.set([5, 1, 0xbe, 0xef, 1, 3, 7, 8, 9]);
  const len = rewriteFlow(buf, 9, 20000, buf);
  assert.equal(len, 12);
  assert.deepEqual(parseDatagram(buf, len), {
    flow: 20000,
    tag: 1,
    datagramId: 0xbeef,
    index: 1,
    count: 3,
    bodyOffset: 9,
    bodyEnd: 12,
  });
  assert.deepEqual([...buf.subarray(9, 12)], [7, 8, 9]);
  const back = rewriteFlow(buf, len, 5, buf);
  assert.deepEqual([...buf.subarray(0, back)], [5, 1, 0xbe, 0xef, 1, 3, 7, 8, 9]);
});

Deno.test("rewriteFlow() throws RangeError when out is too short or input has no tag", () => {
  const src = new Uint8Array([1, 0, 9, 9]);
  assert.throws(() => rewriteFlow(src, 4, 300, new Uint8Array(4)), RangeError);
  assert.throws(() => rewriteFlow(src, 1, 2, new Uint8Array(8)), RangeError);
});

Deno.test("encodeFragments() sends one whole frame when the payload fits", () => {
  const scratch = new Uint8Array(1200);
  const frames: Uint8Array[] = [];
  const payload = new Uint8Array(1200 - 2).fill(3);
  assert.equal(encodeFragments(1, 0, payload, 1200, scratch, (f) => frames.push(f.slice())), 1);
  assert.equal(frames[0].length, 1200);
  assert.equal(parseDatagram(frames[0], 1200)?.tag, 0);
});

Deno.test("encodeFragments() splits into frames of at most maxFrame with shared header", () => {
  const scratch = new Uint8Array(1200);
  const payload = new Uint8Array(8192).map((_, i) => i & 0xff);
  const views: DatagramView[] = [];
  const chunks: Uint8Array[] = [];
  const n = encodeFragments(300, 0xabcd, payload, 1200, scratch, (frame) => {
    assert.ok(frame.length <= 1200);
    assert.equal(frame.buffer, scratch.buffer, "frames are views into scratch");
    const view = parseDatagram(frame, frame.length)!;
    views.push(view);
    chunks.push(frame.slice(view.bodyOffset, view.bodyEnd));
  });
  assert.equal(n, frameCount(300, 8192, 1200));
  assert.equal(n, Math.ceil(8192 / (1200 - fragmentHeaderLength(300))));
  assert.deepEqual(views.map((v) => v.index), [...Array(n).keys()]);
  for (const v of views) {
    assert.equal(v.flow, 300);
    assert.equal(v.tag, 1);
    assert.equal(v.datagramId, 0xabcd);
    assert.equal(v.count, n);
  }
  const joined = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    joined.set(c, offset);
    offset += c.length;
  }
  assert.deepEqual(joined, payload);
});

Deno.test("encodeFragments() validates its arguments", () => {
  const scratch = new Uint8Array(1200);
  const noop = () => {};
  const big = new Uint8Array(65507);
  assert.throws(() => encodeFragments(1, 0, big, 1000, scratch, noop), {
    name: "RangeError",
    message:
      `Cannot fragment datagram as 'payload' must fit in ${MAX_FRAGMENTS} fragments of 994 bytes: current value is 65507 bytes long`,
  });
  assert.throws(() => encodeFragments(1, 65536, big, 1200, scratch, noop), RangeError);
  assert.throws(() => encodeFragments(1, 0, big, 6, scratch, noop), RangeError);
  assert.throws(() => encodeFragments(1, 0, big, 1200, new Uint8Array(600), noop), RangeError);
  assert.equal(encodeFragments(1, 0, big, 1200, scratch, noop), 55);
});

Deno.test("parseDatagram() never throws on 2000 seeded random inputs", () => {
  const random = seededRandom(0xd47a);
  const buf = new Uint8Array(64);
  let parsed = 0;
  for (let i = 0; i < 2000; i++) {
    const len = Math.floor(random() * (buf.length + 1));
    for (let j = 0; j < len; j++) buf[j] = Math.floor(random() * 256);
    // Bias toward plausible headers so the fragment branch is exercised too.
    if (len > 1 && random() < 0.5) buf[1] = Math.floor(random() * 3);
    if (len > 1 && random() < 0.5) buf[0] &= 0x3f;
    const view = parseDatagram(buf, len);
    if (view !== null) {
      parsed++;
      assert.ok(view.bodyOffset <= view.bodyEnd && view.bodyEnd === len);
      assert.ok(view.index < view.count);
    }
  }
  assert.ok(parsed > 100, `only ${parsed} inputs parsed`);
});
