import assert from "node:assert/strict";
import {
  readVarint,
  readVarintValue,
  VARINT_MAX,
  varintLength,
  varintLengthAt,
  writeVarint,
} from "./varint.ts";

Deno.test("varintLength() picks 1, 2, 4 or 8 bytes at the RFC 9000 boundaries", () => {
  const cases: [number, number][] = [
    [0, 1],
    [63, 1],
    [64, 2],
    [16383, 2],
    [16384, 4],
    [2 ** 30 - 1, 4],
    [2 ** 30, 8],
    [VARINT_MAX, 8],
  ];
  for (const [n, length] of cases) assert.equal(varintLength(n), length, `n=${n}`);
});

Deno.test("writeVarint() and readVarint() round-trip boundary values", () => {
  const buf = new Uint8Array(16);
  for (
    const n of [
      0,
      1,
      63,
      64,
      16383,
      16384,
      2 ** 30 - 1,
      2 ** 30,
      2 ** 32,
      2 ** 53 - 1,
      1234567890123,
    ]
  ) {
    const end = writeVarint(buf, 3, n);
    assert.equal(end, 3 + varintLength(n));
    assert.equal(varintLengthAt(buf, 3), varintLength(n));
    assert.deepEqual(readVarint(buf, 3), { value: n, offset: end }, `n=${n}`);
  }
});

Deno.test("writeVarint() produces the RFC 9000 sample encodings", () => {
  const buf = new Uint8Array(8);
  writeVarint(buf, 0, 494878333);
  assert.deepEqual([...buf.subarray(0, 4)], [0x9d, 0x7f, 0x3e, 0x7d]);
  writeVarint(buf, 0, 15293);
  assert.deepEqual([...buf.subarray(0, 2)], [0x7b, 0xbd]);
  writeVarint(buf, 0, 37);
  assert.equal(buf[0], 0x25);
});

Deno.test("readVarint() accepts non-minimal encodings (RFC 9000 sample 0x4025 = 37)", () => {
  assert.deepEqual(readVarint(new Uint8Array([0x40, 0x25]), 0), { value: 37, offset: 2 });
});

Deno.test("readVarint() returns null when truncated", () => {
  assert.equal(readVarint(new Uint8Array([]), 0), null);
  assert.equal(readVarint(new Uint8Array([0x40]), 0), null);
  assert.equal(readVarint(new Uint8Array([0x80, 0, 0]), 0), null);
  assert.equal(readVarint(new Uint8Array([0xc0, 0, 0, 0, 0, 0, 0]), 0), null);
  assert.equal(readVarint(new Uint8Array([0x40, 0x40]), 0, 1), null);
});

Deno.test("readVarint() rejects values above 2^53-1 with RangeError", () => {
  // 2^53 exactly: high 32 bits = 2^21.
  const buf = new Uint8Array([0xc0, 0x20, 0, 0, 0, 0, 0, 0]);
  assert.throws(() => readVarint(buf, 0), RangeError);
  assert.equal(readVarintValue(buf, 0, 8), -1);
  const max = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  assert.throws(() => readVarint(max, 0), RangeError);
  const safe = new Uint8Array([0xc0, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual(readVarint(safe, 0), { value: VARINT_MAX, offset: 8 });
});

Deno.test("writeVarint() validates its arguments", () => {
  const buf = new Uint8Array(2);
  assert.throws(() => writeVarint(buf, 0, -1), {
    name: "RangeError",
    message: "Cannot write varint as 'n' must be a non-negative safe integer: current value is -1",
  });
  assert.throws(() => writeVarint(buf, 0, 2 ** 53), RangeError);
  assert.throws(() => writeVarint(buf, 0, 1.5), RangeError);
  assert.throws(() => writeVarint(buf, 0, 16384), RangeError);
  assert.throws(() => writeVarint(buf, 2, 1), RangeError);
  assert.throws(() => writeVarint(buf, -1, 1), RangeError);
});
