/**
 * QUIC variable-length integers (RFC 9000 §16): the two high bits of the first
 * byte give the encoded length (1, 2, 4 or 8 bytes), the rest is the value in
 * network byte order. The wire format allows values up to 2^62-1; this module
 * works with `number`, so values above `Number.MAX_SAFE_INTEGER` are rejected.
 *
 * @module
 */

/** Largest value this module encodes or decodes (2^53-1). */
export const VARINT_MAX: number = Number.MAX_SAFE_INTEGER;

/** Result of {@linkcode readVarint}. */
export interface VarintRead {
  /** The decoded value. */
  value: number;
  /** Offset of the first byte after the varint. */
  offset: number;
}

const TWO_POW_32 = 0x1_0000_0000;
// An 8-byte varint is safe while its high 32 bits stay below 2^21 (2^21 * 2^32 = 2^53).
const MAX_SAFE_HIGH = 0x20_0000;

function assertValue(n: number, action: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(
      `Cannot ${action} as 'n' must be a non-negative safe integer: current value is ${n}`,
    );
  }
}

function assertOffset(offset: number, action: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new RangeError(
      `Cannot ${action} as 'offset' must be a non-negative integer: current value is ${offset}`,
    );
  }
}

/**
 * Returns the minimal encoded length of `n` in bytes.
 *
 * @example Usage
 * ```ts
 * import { varintLength } from "./varint.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(varintLength(63), 1);
 * assert.equal(varintLength(64), 2);
 * ```
 *
 * @param n The value to encode.
 * @returns 1, 2, 4 or 8.
 */
export function varintLength(n: number): 1 | 2 | 4 | 8 {
  assertValue(n, "compute varint length");
  return minimalLength(n);
}

function minimalLength(n: number): 1 | 2 | 4 | 8 {
  if (n < 0x40) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x4000_0000) return 4;
  return 8;
}

/**
 * Returns the length of the varint starting at `buf[offset]`, read from its
 * two high bits. The caller must ensure `offset < buf.length`.
 *
 * @example Usage
 * ```ts
 * import { varintLengthAt } from "./varint.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(varintLengthAt(new Uint8Array([0x40, 0x40]), 0), 2);
 * ```
 *
 * @param buf The bytes.
 * @param offset Offset of the varint's first byte.
 * @returns 1, 2, 4 or 8.
 */
export function varintLengthAt(buf: Uint8Array, offset: number): 1 | 2 | 4 | 8 {
  return (1 << (buf[offset] >> 6)) as 1 | 2 | 4 | 8;
}

/**
 * Decodes the value of a varint of known `length` at `offset` without
 * allocating. The caller must ensure `length` bytes are available (see
 * {@linkcode varintLengthAt}). Hot-path primitive behind
 * {@linkcode readVarint}.
 *
 * @example Usage
 * ```ts
 * import { readVarintValue } from "./varint.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(readVarintValue(new Uint8Array([0x7f, 0xff]), 0, 2), 16383);
 * ```
 *
 * @param buf The bytes.
 * @param offset Offset of the varint's first byte.
 * @param length The varint's encoded length (1, 2, 4 or 8).
 * @returns The value, or -1 when it exceeds {@linkcode VARINT_MAX}.
 */
export function readVarintValue(buf: Uint8Array, offset: number, length: 1 | 2 | 4 | 8): number {
  const b0 = buf[offset] & 0x3f;
  switch (length) {
    case 1:
      return b0;
    case 2:
      return (b0 << 8) | buf[offset + 1];
    case 4:
      return ((b0 << 24) | (buf[offset + 1] << 16) | (buf[offset + 2] << 8) | buf[offset + 3]) >>>
        0;
    default: {
      const high = ((b0 << 24) | (buf[offset + 1] << 16) | (buf[offset + 2] << 8) |
        buf[offset + 3]) >>> 0;
      if (high >= MAX_SAFE_HIGH) return -1;
      const low = ((buf[offset + 4] << 24) | (buf[offset + 5] << 16) | (buf[offset + 6] << 8) |
        buf[offset + 7]) >>> 0;
      return high * TWO_POW_32 + low;
    }
  }
}

/**
 * Writes `n` as a minimal-length varint into `buf` at `offset`.
 *
 * @example Usage
 * ```ts
 * import { writeVarint } from "./varint.ts";
 * import assert from "node:assert/strict";
 *
 * const buf = new Uint8Array(8);
 * assert.equal(writeVarint(buf, 0, 16384), 4);
 * assert.deepEqual([...buf.subarray(0, 4)], [0x80, 0x00, 0x40, 0x00]);
 * ```
 *
 * @param buf The destination.
 * @param offset Where to write.
 * @param n The value, a non-negative safe integer.
 * @returns The offset after the written bytes.
 * @throws {RangeError} When `n` or `offset` is invalid or `buf` is too short.
 */
export function writeVarint(buf: Uint8Array, offset: number, n: number): number {
  assertValue(n, "write varint");
  assertOffset(offset, "write varint");
  const length = minimalLength(n);
  if (offset + length > buf.length) {
    throw new RangeError(
      `Cannot write varint as 'buf' must have ${length} bytes free at offset ${offset}: current value is ${buf.length} bytes long`,
    );
  }
  switch (length) {
    case 1:
      buf[offset] = n;
      break;
    case 2:
      buf[offset] = 0x40 | (n >>> 8);
      buf[offset + 1] = n & 0xff;
      break;
    case 4:
      buf[offset] = 0x80 | (n >>> 24);
      buf[offset + 1] = (n >>> 16) & 0xff;
      buf[offset + 2] = (n >>> 8) & 0xff;
      buf[offset + 3] = n & 0xff;
      break;
    default: {
      const high = Math.floor(n / TWO_POW_32);
      const low = n >>> 0;
      buf[offset] = 0xc0 | (high >>> 24);
      buf[offset + 1] = (high >>> 16) & 0xff;
      buf[offset + 2] = (high >>> 8) & 0xff;
      buf[offset + 3] = high & 0xff;
      buf[offset + 4] = low >>> 24;
      buf[offset + 5] = (low >>> 16) & 0xff;
      buf[offset + 6] = (low >>> 8) & 0xff;
      buf[offset + 7] = low & 0xff;
    }
  }
  return offset + length;
}

/**
 * Reads a varint at `offset`. Non-minimal encodings are accepted, as RFC 9000
 * allows them.
 *
 * @example Usage
 * ```ts
 * import { readVarint } from "./varint.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(readVarint(new Uint8Array([0x40, 0x40]), 0), { value: 64, offset: 2 });
 * assert.equal(readVarint(new Uint8Array([0x40]), 0), null);
 * ```
 *
 * @param buf The bytes.
 * @param offset Offset of the varint's first byte.
 * @param end Exclusive end of the readable bytes.
 * @default {end} buf.length
 * @returns The value and next offset, or `null` when the varint is truncated.
 * @throws {RangeError} When the value exceeds {@linkcode VARINT_MAX} or `offset` is invalid.
 */
export function readVarint(
  buf: Uint8Array,
  offset: number,
  end: number = buf.length,
): VarintRead | null {
  assertOffset(offset, "read varint");
  const limit = Math.min(end, buf.length);
  if (offset >= limit) return null;
  const length = varintLengthAt(buf, offset);
  if (offset + length > limit) return null;
  const value = readVarintValue(buf, offset, length);
  if (value < 0) {
    throw new RangeError(
      `Cannot read varint as its value must be at most ${VARINT_MAX}: current value is above 2^53`,
    );
  }
  return { value, offset: offset + length };
}
