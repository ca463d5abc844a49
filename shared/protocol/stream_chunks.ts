/**
 * The chunk framing of a TCP-flow stream, after its header (`stream_header.ts`): each
 * direction carries the TCP byte stream as `u16 big-endian length | payload` chunks, and a
 * zero-length chunk (the end chunk, {@linkcode END_CHUNK}) written together with the FIN marks
 * the end of the data.
 *
 * The decoder is a pure state machine over the bytes a reader pulled off the stream and the
 * FIN flag that came with them. It never asks for more bytes than the current chunk still
 * holds ({@linkcode ChunkDecoder.wanted}), so a reader that cannot pass payload on yet leaves
 * the rest in QUIC (under flow control), and it holds at most one byte of a chunk header
 * between calls: payload is handed back as a view of the bytes pushed, never copied.
 *
 * Accepted ends of the data:
 * - the end chunk followed by the FIN (in the same read or a later empty one), as every
 *   sender in this project writes it;
 * - a FIN right after a complete chunk (between chunks) without an end chunk.
 *
 * Rejected, with {@linkcode ChunkFramingError}:
 * - `truncated_chunk`: the FIN arrives inside a chunk header, right after the header of a
 *   non-empty chunk, or before that chunk's payload is complete;
 * - `data_after_end`: any byte after the end chunk.
 *
 * A reader resets the stream with `StreamCode.PROTOCOL_VIOLATION` on either.
 *
 * @module
 */

/** Length of a chunk header: the payload length as a big-endian u16. */
export const CHUNK_HEADER_BYTES = 2;

/** Largest payload of one chunk, in bytes. */
export const MAX_CHUNK_PAYLOAD = 0xffff;

/**
 * The end-of-data chunk (a zero length) that goes with every FIN on a TCP-flow stream, also
 * after a `refused` answer: quiche 0.18 never resends a lost FIN that travelled alone once
 * the stream's other direction is finished, so a FIN always rides on these bytes.
 */
export const END_CHUNK: Uint8Array = new Uint8Array(CHUNK_HEADER_BYTES);

/** Why a chunk stream was rejected. */
export type ChunkFramingReason = "truncated_chunk" | "data_after_end";

/** The chunk framing of a stream was broken; the reader resets the stream. */
export class ChunkFramingError extends Error {
  /** What was wrong, for logs and metrics labels. */
  readonly reason: ChunkFramingReason;

  /**
   * Constructs a new instance.
   *
   * @param reason What was wrong.
   * @param message Human-readable detail.
   */
  constructor(reason: ChunkFramingReason, message: string) {
    super(message);
    this.name = "ChunkFramingError";
    this.reason = reason;
  }
}

/**
 * Where a {@linkcode ChunkDecoder} is: reading a chunk header, a chunk's payload, waiting for
 * the FIN after the end chunk, or done.
 */
export type ChunkPhase = "header" | "payload" | "end_chunk" | "ended";

/** Incremental decoder of one direction's chunk stream. */
export interface ChunkDecoder {
  /**
   * How many bytes to read next, at most: the rest of a chunk header, the rest of the
   * current chunk's payload (up to {@linkcode MAX_CHUNK_PAYLOAD}), 1 after the end chunk (to
   * see the FIN, or a byte that must not be there), 0 once ended or failed.
   */
  wanted(): number;
  /**
   * Feeds the bytes of one read (never more than {@linkcode ChunkDecoder.wanted}) and
   * whether the FIN came with them. Returns the payload among them: `bytes` itself (a view)
   * while reading a chunk's payload, otherwise an empty array.
   *
   * @throws {ChunkFramingError} On a FIN inside a chunk or data after the end chunk.
   * @throws {RangeError} When fed more than {@linkcode ChunkDecoder.wanted} (a caller bug).
   */
  push(bytes: Uint8Array, fin: boolean): Uint8Array;
  /** The current phase. */
  readonly phase: ChunkPhase;
  /** True once the data ended cleanly (FIN received). */
  readonly ended: boolean;
  /** Chunk-header bytes held between calls (0 or 1). */
  readonly buffered: number;
}

const EMPTY = new Uint8Array(0);

/**
 * Creates a decoder for one direction's chunk stream.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createChunkDecoder } from "./stream_chunks.ts";
 *
 * const decoder = createChunkDecoder();
 * assert.equal(decoder.wanted(), 2);
 * assert.deepEqual(decoder.push(new Uint8Array([0, 3]), false), new Uint8Array());
 * assert.equal(decoder.wanted(), 3);
 * assert.deepEqual(decoder.push(new Uint8Array([104, 105, 33]), false), new Uint8Array([104, 105, 33]));
 * decoder.push(new Uint8Array([0, 0]), true); // the end chunk with the FIN
 * assert.equal(decoder.ended, true);
 * ```
 */
export function createChunkDecoder(): ChunkDecoder {
  let phase: ChunkPhase = "header";
  let failed = false;
  let headerHigh = 0;
  let headerFilled = 0;
  /** Payload bytes of the current chunk not read yet. */
  let left = 0;

  function wanted(): number {
    if (failed) return 0;
    switch (phase) {
      case "header":
        return CHUNK_HEADER_BYTES - headerFilled;
      case "payload":
        return left;
      case "end_chunk":
        return 1;
      case "ended":
        return 0;
    }
  }

  function fail(reason: ChunkFramingReason, message: string): never {
    failed = true;
    throw new ChunkFramingError(reason, message);
  }

  return {
    wanted,
    push(bytes, fin) {
      if (failed) throw new RangeError("Cannot push chunk bytes into a decoder that failed");
      if (bytes.length > wanted()) {
        throw new RangeError(
          `Cannot push chunk bytes as 'bytes.length' must be at most ${wanted()}: current value is ${bytes.length}`,
        );
      }
      switch (phase) {
        case "header": {
          for (const byte of bytes) {
            if (headerFilled === 0) headerHigh = byte;
            headerFilled++;
            if (headerFilled === CHUNK_HEADER_BYTES) left = (headerHigh << 8) | byte;
          }
          if (headerFilled < CHUNK_HEADER_BYTES) {
            if (fin) {
              if (headerFilled > 0) fail("truncated_chunk", "FIN inside a chunk header");
              // A FIN between chunks without the end chunk is still a clean end of the data.
              phase = "ended";
            }
            return EMPTY;
          }
          headerFilled = 0;
          if (left === 0) {
            phase = fin ? "ended" : "end_chunk";
            return EMPTY;
          }
          if (fin) fail("truncated_chunk", `FIN right after the header of a ${left}-byte chunk`);
          phase = "payload";
          return EMPTY;
        }
        case "payload": {
          left -= bytes.length;
          if (fin) {
            // A FIN inside a chunk means the data was cut short; at its end it ends the data.
            if (left > 0) fail("truncated_chunk", `FIN with ${left} bytes of the chunk missing`);
            phase = "ended";
          } else if (left === 0) phase = "header";
          return bytes;
        }
        case "end_chunk":
          if (bytes.length > 0) fail("data_after_end", "Data after the end chunk");
          if (fin) phase = "ended";
          return EMPTY;
        case "ended":
          return EMPTY;
      }
    },
    get phase() {
      return phase;
    },
    get ended() {
      return phase === "ended";
    },
    get buffered() {
      return headerFilled;
    },
  };
}

/**
 * Encodes `payload` as one chunk (header and payload).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeChunk } from "./stream_chunks.ts";
 *
 * assert.deepEqual([...encodeChunk(new Uint8Array([7, 7, 7]))], [0, 3, 7, 7, 7]);
 * ```
 *
 * @param payload 1..{@linkcode MAX_CHUNK_PAYLOAD} bytes (an empty payload is the end chunk).
 * @returns A new array.
 * @throws {RangeError} When `payload` is longer than {@linkcode MAX_CHUNK_PAYLOAD}.
 */
export function encodeChunk(payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_CHUNK_PAYLOAD) {
    throw new RangeError(
      `Cannot encode a chunk as 'payload.length' must be at most ${MAX_CHUNK_PAYLOAD}: current value is ${payload.length}`,
    );
  }
  const out = new Uint8Array(CHUNK_HEADER_BYTES + payload.length);
  out[0] = payload.length >> 8;
  out[1] = payload.length & 0xff;
  out.set(payload, CHUNK_HEADER_BYTES);
  return out;
}

/** The outcome of {@linkcode decodeChunkStream}. */
export interface DecodedChunks {
  /** All payload bytes, concatenated. */
  payload: Uint8Array;
  /** True when the data ended cleanly; false when more bytes are needed. */
  ended: boolean;
}

/**
 * Decodes a whole chunk stream at once (reads of at most `wanted()` bytes, the FIN with the
 * last one): the reference a split, incremental decode must agree with.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeChunkStream } from "./stream_chunks.ts";
 *
 * const { payload, ended } = decodeChunkStream(new Uint8Array([0, 2, 104, 105, 0, 0]), true);
 * assert.deepEqual([...payload], [104, 105]);
 * assert.equal(ended, true);
 * ```
 *
 * @param input The bytes of one direction after the stream header.
 * @param fin Whether the FIN came after the last byte.
 * @throws {ChunkFramingError} When the framing is broken.
 */
export function decodeChunkStream(input: Uint8Array, fin: boolean): DecodedChunks {
  const decoder = createChunkDecoder();
  const parts: Uint8Array[] = [];
  let total = 0;
  let offset = 0;
  while (!decoder.ended) {
    const take = Math.min(decoder.wanted(), input.length - offset);
    const last = offset + take === input.length;
    // Nothing left to read: only a FIN can still move the decoder on.
    if (take === 0 && !fin) break;
    const payload = decoder.push(input.subarray(offset, offset + take), last && fin);
    offset += take;
    if (payload.length > 0) {
      parts.push(payload);
      total += payload.length;
    }
    if (last) break;
  }
  const payload = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    payload.set(part, at);
    at += part.length;
  }
  return { payload, ended: decoder.ended };
}

/** Counts the payload of a chunk stream as it passes (see {@linkcode createChunkCounter}). */
export interface ChunkCounter {
  /** Feeds the next bytes of the direction, in order, each byte exactly once. */
  push(bytes: Uint8Array): void;
  /** Payload bytes seen so far (chunk headers not included). */
  readonly payloadBytes: number;
  /** Non-empty chunks whose header was seen so far. */
  readonly chunks: number;
}

/**
 * Creates a counter of payload bytes and chunks for a relay that forwards a chunk stream
 * without decoding it: it only follows chunk boundaries, never validates or copies (the ends
 * validate the framing). `skip` leading bytes (a stream header written ahead of the chunks)
 * are not counted.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createChunkCounter, encodeChunk, END_CHUNK } from "./stream_chunks.ts";
 *
 * const counter = createChunkCounter(3);
 * counter.push(new Uint8Array([9, 9, 9, 0])); // 3 header bytes, then half a chunk header
 * counter.push(new Uint8Array([2, 104]));
 * counter.push(new Uint8Array([105, ...encodeChunk(new Uint8Array(5)), ...END_CHUNK]));
 * assert.equal(counter.payloadBytes, 7);
 * assert.equal(counter.chunks, 2);
 * ```
 *
 * @param skip Bytes ahead of the first chunk header.
 * @returns The counter.
 */
export function createChunkCounter(skip = 0): ChunkCounter {
  let toSkip = skip;
  let remaining = 0;
  let haveHigh = false;
  let high = 0;
  let payloadBytes = 0;
  let chunks = 0;
  return {
    push(bytes) {
      let i = 0;
      while (i < bytes.length) {
        if (toSkip > 0 || remaining > 0) {
          const skipping = toSkip > 0;
          const take = Math.min(skipping ? toSkip : remaining, bytes.length - i);
          if (skipping) toSkip -= take;
          else {
            remaining -= take;
            payloadBytes += take;
          }
          i += take;
        } else if (!haveHigh) {
          high = bytes[i++];
          haveHigh = true;
        } else {
          remaining = (high << 8) | bytes[i++];
          haveHigh = false;
          if (remaining > 0) chunks++;
        }
      }
    },
    get payloadBytes() {
      return payloadBytes;
    },
    get chunks() {
      return chunks;
    },
  };
}
