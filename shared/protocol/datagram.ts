/**
 * DATAGRAM payload codec: `varint flow_id | u8 tag | body`.
 *
 * - tag 0 (whole): the body is one UDP payload.
 * - tag 1 (fragment): `u16 BE datagram_id | u8 index | u8 count | chunk`, with
 *   `2 <= count <= 64` and `index < count`; the far end reassembles the chunks
 *   in index order (see `reassembly.ts`).
 *
 * Every function here writes into caller-provided buffers: it runs once per
 * datagram on the relay, connector and agent data paths.
 *
 * @module
 */

import { readVarintValue, varintLength, varintLengthAt, writeVarint } from "./varint.ts";

/** Tag of a datagram carrying one whole UDP payload. */
export const TAG_WHOLE = 0;
/** Tag of a datagram carrying one fragment of a UDP payload. */
export const TAG_FRAGMENT = 1;
/** Fewest fragments a fragmented payload is split into. */
export const MIN_FRAGMENTS = 2;
/** Most fragments a fragmented payload is split into. */
export const MAX_FRAGMENTS = 64;
/** Largest datagram id (ids are u16 and wrap around). */
export const MAX_DATAGRAM_ID = 0xffff;

// u16 datagram id + u8 index + u8 count.
const FRAGMENT_FIELDS_LENGTH = 4;

/** A parsed DATAGRAM payload: fields plus where the body sits in the input. */
export interface DatagramView {
  /** Flow id. */
  flow: number;
  /** 0 = whole payload, 1 = fragment. */
  tag: 0 | 1;
  /** Datagram id of a fragment (0 for whole payloads). */
  datagramId: number;
  /** Fragment index (0 for whole payloads). */
  index: number;
  /** Fragment count (1 for whole payloads). */
  count: number;
  /** Offset of the payload/chunk bytes in the input. */
  bodyOffset: number;
  /** Exclusive end of the payload/chunk bytes in the input (the parsed length). */
  bodyEnd: number;
}

/** Receives one encoded frame; the view is only valid during the call. */
export type EmitFrame = (frame: Uint8Array) => void;

/**
 * Parses a DATAGRAM payload held in `buf[0..len)`. Never throws on bad input:
 * malformed payloads (truncated, unknown tag, bad fragment fields, flow id
 * above 2^53-1) yield `null` so the caller can count them.
 *
 * @example Usage
 * ```ts
 * import { encodeWhole, parseDatagram } from "./datagram.ts";
 * import assert from "node:assert/strict";
 *
 * const buf = new Uint8Array(64);
 * const len = encodeWhole(7, new Uint8Array([1, 2, 3]), buf);
 * const view = parseDatagram(buf, len);
 * assert.equal(view?.flow, 7);
 * assert.deepEqual([...buf.subarray(view!.bodyOffset, view!.bodyEnd)], [1, 2, 3]);
 * ```
 *
 * @param buf The received bytes.
 * @param len How many bytes of `buf` are the datagram.
 * @param into A view object to fill and return instead of allocating one.
 * @returns The view, or `null` when malformed.
 * @throws {RangeError} When `len` is not an integer within `buf`.
 */
export function parseDatagram(
  buf: Uint8Array,
  len: number,
  into?: DatagramView,
): DatagramView | null {
  if (!Number.isInteger(len) || len < 0 || len > buf.length) {
    throw new RangeError(
      `Cannot parse datagram as 'len' must be an integer in [0, ${buf.length}]: current value is ${len}`,
    );
  }
  if (len === 0) return null;
  const flowLength = varintLengthAt(buf, 0);
  if (flowLength >= len) return null;
  const flow = readVarintValue(buf, 0, flowLength);
  if (flow < 0) return null;
  const tag = buf[flowLength];
  let datagramId = 0;
  let index = 0;
  let count = 1;
  let bodyOffset = flowLength + 1;
  if (tag === TAG_FRAGMENT) {
    if (bodyOffset + FRAGMENT_FIELDS_LENGTH > len) return null;
    datagramId = (buf[bodyOffset] << 8) | buf[bodyOffset + 1];
    index = buf[bodyOffset + 2];
    count = buf[bodyOffset + 3];
    if (count < MIN_FRAGMENTS || count > MAX_FRAGMENTS || index >= count) return null;
    bodyOffset += FRAGMENT_FIELDS_LENGTH;
  } else if (tag !== TAG_WHOLE) {
    return null;
  }
  const view = into ?? {} as DatagramView;
  view.flow = flow;
  view.tag = tag;
  view.datagramId = datagramId;
  view.index = index;
  view.count = count;
  view.bodyOffset = bodyOffset;
  view.bodyEnd = len;
  return view;
}

/**
 * Copies the datagram in `buf[0..len)` into `out` with its flow id replaced by
 * `newFlow`; tag and body are copied untouched (the relay forwards fragments
 * without reassembling them). `out` may be `buf` itself; other overlapping
 * views are not supported.
 *
 * @example Usage
 * ```ts
 * import { encodeWhole, parseDatagram, rewriteFlow } from "./datagram.ts";
 * import assert from "node:assert/strict";
 *
 * const buf = new Uint8Array(64);
 * const len = encodeWhole(1, new Uint8Array([9]), buf);
 * const out = new Uint8Array(64);
 * const outLen = rewriteFlow(buf, len, 300, out);
 * assert.equal(outLen, len + 1);
 * assert.equal(parseDatagram(out, outLen)?.flow, 300);
 * ```
 *
 * @param buf The source datagram.
 * @param len Its length in `buf`.
 * @param newFlow The flow id to write.
 * @param out The destination.
 * @returns The length of the rewritten datagram in `out`.
 * @throws {RangeError} When the source has no complete flow id and tag, or `out` is too short.
 */
export function rewriteFlow(
  buf: Uint8Array,
  len: number,
  newFlow: number,
  out: Uint8Array,
): number {
  if (!Number.isInteger(len) || len < 1 || len > buf.length) {
    throw new RangeError(
      `Cannot rewrite flow as 'len' must be an integer in [1, ${buf.length}]: current value is ${len}`,
    );
  }
  const oldLength = varintLengthAt(buf, 0);
  if (oldLength >= len) {
    throw new RangeError(
      `Cannot rewrite flow as 'len' must exceed the flow id length ${oldLength}: current value is ${len}`,
    );
  }
  const newLength = varintLength(newFlow);
  const outLen = len - oldLength + newLength;
  if (outLen > out.length) {
    throw new RangeError(
      `Cannot rewrite flow as 'out' must hold ${outLen} bytes: current value is ${out.length} bytes long`,
    );
  }
  if (out === buf) {
    if (newLength !== oldLength) buf.copyWithin(newLength, oldLength, len);
  } else {
    out.set(buf.subarray(oldLength, len), newLength);
  }
  writeVarint(out, 0, newFlow);
  return outLen;
}

/**
 * Encodes a whole (unfragmented) datagram into `out`.
 *
 * @example Usage
 * ```ts
 * import { encodeWhole } from "./datagram.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Uint8Array(16);
 * assert.equal(encodeWhole(5, new Uint8Array([1, 2]), out), 4);
 * assert.deepEqual([...out.subarray(0, 4)], [5, 0, 1, 2]);
 * ```
 *
 * @param flow The flow id.
 * @param payload The UDP payload.
 * @param out The destination.
 * @returns The encoded length.
 * @throws {RangeError} When `flow` is invalid or `out` is too short.
 */
export function encodeWhole(flow: number, payload: Uint8Array, out: Uint8Array): number {
  const headerLength = varintLength(flow) + 1;
  const total = headerLength + payload.length;
  if (total > out.length) {
    throw new RangeError(
      `Cannot encode datagram as 'out' must hold ${total} bytes: current value is ${out.length} bytes long`,
    );
  }
  writeVarint(out, 0, flow);
  out[headerLength - 1] = TAG_WHOLE;
  out.set(payload, headerLength);
  return total;
}

/**
 * Returns the header length of a whole datagram on `flow` (flow id + tag).
 *
 * @example Usage
 * ```ts
 * import { wholeHeaderLength } from "./datagram.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(wholeHeaderLength(64), 3);
 * ```
 *
 * @param flow The flow id.
 * @returns The header length in bytes.
 */
export function wholeHeaderLength(flow: number): number {
  return varintLength(flow) + 1;
}

/**
 * Returns the header length of a fragment on `flow` (flow id + tag +
 * datagram id + index + count).
 *
 * @example Usage
 * ```ts
 * import { fragmentHeaderLength } from "./datagram.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(fragmentHeaderLength(1), 6);
 * ```
 *
 * @param flow The flow id.
 * @returns The header length in bytes.
 */
export function fragmentHeaderLength(flow: number): number {
  return varintLength(flow) + 1 + FRAGMENT_FIELDS_LENGTH;
}

/**
 * Returns how many frames {@linkcode encodeFragments} produces for a payload:
 * 1 when it fits whole in `maxFrame`, else the fragment count (which may
 * exceed {@linkcode MAX_FRAGMENTS}, meaning the payload cannot be sent).
 *
 * @example Usage
 * ```ts
 * import { frameCount } from "./datagram.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(frameCount(1, 1000, 1200), 1);
 * assert.equal(frameCount(1, 8192, 1200), 7);
 * ```
 *
 * @param flow The flow id.
 * @param payloadLength The UDP payload length.
 * @param maxFrame The largest DATAGRAM frame the connection can write.
 * @returns The number of frames.
 * @throws {RangeError} When `maxFrame` cannot carry one byte of a fragment.
 */
export function frameCount(flow: number, payloadLength: number, maxFrame: number): number {
  if (wholeHeaderLength(flow) + payloadLength <= maxFrame) return 1;
  const chunk = fragmentChunkLength(flow, maxFrame);
  return Math.ceil(payloadLength / chunk);
}

function fragmentChunkLength(flow: number, maxFrame: number): number {
  const headerLength = fragmentHeaderLength(flow);
  if (!Number.isInteger(maxFrame) || maxFrame <= headerLength) {
    throw new RangeError(
      `Cannot fragment datagram as 'maxFrame' must be an integer above ${headerLength}: current value is ${maxFrame}`,
    );
  }
  return maxFrame - headerLength;
}

/**
 * Turns one UDP payload into DATAGRAM frames of at most `maxFrame` bytes and
 * hands each to `emit`: one whole frame (tag 0) when it fits, else 2..64
 * fragments (tag 1) whose chunks are full-size except the last. Frames are
 * built in `scratch` and passed as views into it, so nothing is allocated per
 * frame beyond the view; `emit` must send or copy the frame before returning.
 *
 * @example Usage
 * ```ts
 * import { encodeFragments, parseDatagram } from "./datagram.ts";
 * import assert from "node:assert/strict";
 *
 * const scratch = new Uint8Array(1200);
 * const tags: number[] = [];
 * const n = encodeFragments(3, 0, new Uint8Array(3000), 1200, scratch, (frame) => {
 *   tags.push(parseDatagram(frame, frame.length)!.tag);
 * });
 * assert.equal(n, 3);
 * assert.deepEqual(tags, [1, 1, 1]);
 * ```
 *
 * @param flow The flow id.
 * @param datagramId The sender's per-flow datagram id (u16, wrapping); unused for whole frames.
 * @param payload The UDP payload.
 * @param maxFrame The largest DATAGRAM frame the connection can write.
 * @param scratch A reusable buffer of at least `min(maxFrame, payload.length + header)` bytes.
 * @param emit Receives each frame in index order.
 * @returns The number of frames emitted.
 * @throws {RangeError} When an argument is invalid or the payload needs more than 64 fragments.
 */
export function encodeFragments(
  flow: number,
  datagramId: number,
  payload: Uint8Array,
  maxFrame: number,
  scratch: Uint8Array,
  emit: EmitFrame,
): number {
  const wholeLength = wholeHeaderLength(flow) + payload.length;
  if (wholeLength <= maxFrame) {
    const len = encodeWhole(flow, payload, scratch);
    emit(scratch.subarray(0, len));
    return 1;
  }
  if (!Number.isInteger(datagramId) || datagramId < 0 || datagramId > MAX_DATAGRAM_ID) {
    throw new RangeError(
      `Cannot fragment datagram as 'datagramId' must be an integer in [0, ${MAX_DATAGRAM_ID}]: current value is ${datagramId}`,
    );
  }
  const chunkLength = fragmentChunkLength(flow, maxFrame);
  const count = Math.ceil(payload.length / chunkLength);
  if (count > MAX_FRAGMENTS) {
    throw new RangeError(
      `Cannot fragment datagram as 'payload' must fit in ${MAX_FRAGMENTS} fragments of ${chunkLength} bytes: current value is ${payload.length} bytes long`,
    );
  }
  if (scratch.length < maxFrame) {
    throw new RangeError(
      `Cannot fragment datagram as 'scratch' must hold ${maxFrame} bytes: current value is ${scratch.length} bytes long`,
    );
  }
  // The header is identical across fragments except the index byte.
  let pos = writeVarint(scratch, 0, flow);
  scratch[pos++] = TAG_FRAGMENT;
  scratch[pos++] = datagramId >>> 8;
  scratch[pos++] = datagramId & 0xff;
  const indexAt = pos++;
  scratch[pos++] = count;
  const headerLength = pos;
  for (let index = 0; index < count; index++) {
    const start = index * chunkLength;
    const end = Math.min(start + chunkLength, payload.length);
    scratch[indexAt] = index;
    scratch.set(payload.subarray(start, end), headerLength);
    emit(scratch.subarray(0, headerLength + end - start));
  }
  return count;
}
