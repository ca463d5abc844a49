import assert from "node:assert/strict";
import {
  CHUNK_HEADER_BYTES,
  ChunkFramingError,
  createChunkCounter,
  createChunkDecoder,
  decodeChunkStream,
  encodeChunk,
  END_CHUNK,
  MAX_CHUNK_PAYLOAD,
} from "./stream_chunks.ts";
import { END_CHUNK as HEADER_END_CHUNK } from "./stream_header.ts";

const text = (s: string) => new TextEncoder().encode(s);
const concat = (...parts: Uint8Array[]) => new Uint8Array(parts.flatMap((p) => [...p]));

/** Feeds `input` one byte at a time (the FIN with the last byte, or alone when `lone`). */
function byteByByte(input: Uint8Array, fin: boolean, lone = false): { payload: number[] } {
  const decoder = createChunkDecoder();
  const payload: number[] = [];
  for (let i = 0; i < input.length; i++) {
    assert.ok(decoder.wanted() >= 1);
    const last = i === input.length - 1;
    payload.push(...decoder.push(input.subarray(i, i + 1), fin && last && !lone));
    assert.ok(decoder.buffered <= CHUNK_HEADER_BYTES - 1);
  }
  if (fin && (lone || input.length === 0)) decoder.push(new Uint8Array(0), true);
  assert.equal(decoder.ended, fin);
  return { payload };
}

function assertFraming(fn: () => unknown, reason: string): void {
  assert.throws(fn, (error) => error instanceof ChunkFramingError && error.reason === reason);
}

Deno.test("stream chunks: END_CHUNK is the zero-length chunk, the same one stream_header exports", () => {
  assert.deepEqual([...END_CHUNK], [0, 0]);
  assert.equal(HEADER_END_CHUNK, END_CHUNK);
  assert.deepEqual([...encodeChunk(new Uint8Array())], [0, 0]);
  assert.deepEqual([...encodeChunk(text("hi"))], [0, 2, 0x68, 0x69]);
  assert.equal(encodeChunk(new Uint8Array(MAX_CHUNK_PAYLOAD)).length, 2 + 0xffff);
  assert.throws(() => encodeChunk(new Uint8Array(MAX_CHUNK_PAYLOAD + 1)), RangeError);
});

Deno.test("stream chunks: chunks and the end chunk with the FIN decode whole and byte by byte", () => {
  const input = concat(encodeChunk(text("hello ")), encodeChunk(text("world")), END_CHUNK);
  assert.deepEqual(decodeChunkStream(input, true), { payload: text("hello world"), ended: true });
  assert.deepEqual(byteByByte(input, true).payload, [...text("hello world")]);
  // The FIN may also come in an empty read of its own after the end chunk.
  assert.deepEqual(byteByByte(input, true, true).payload, [...text("hello world")]);
});

Deno.test("stream chunks: the decoder never asks past the current chunk", () => {
  const decoder = createChunkDecoder();
  assert.equal(decoder.phase, "header");
  assert.equal(decoder.wanted(), 2);
  decoder.push(new Uint8Array([0x01]), false);
  assert.equal(decoder.buffered, 1);
  assert.equal(decoder.wanted(), 1);
  decoder.push(new Uint8Array([0x00]), false);
  assert.equal(decoder.phase, "payload");
  assert.equal(decoder.wanted(), 256);
  const part = new Uint8Array(100).fill(9);
  // Payload comes back as the very bytes pushed, not a copy.
  assert.equal(decoder.push(part, false), part);
  assert.equal(decoder.wanted(), 156);
  assert.throws(() => decoder.push(new Uint8Array(157), false), RangeError);
  decoder.push(new Uint8Array(156), false);
  assert.equal(decoder.phase, "header");
  decoder.push(new Uint8Array([0, 0]), false);
  assert.equal(decoder.phase, "end_chunk");
  assert.equal(decoder.wanted(), 1, "one probe byte: the FIN, or data that must not be there");
  assert.equal(decoder.push(new Uint8Array(0), true).length, 0);
  assert.equal(decoder.ended, true);
  assert.equal(decoder.wanted(), 0);
  const big = createChunkDecoder();
  big.push(new Uint8Array([0xff, 0xff]), false);
  assert.equal(big.wanted(), MAX_CHUNK_PAYLOAD);
});

Deno.test("stream chunks: a FIN between chunks without the end chunk is a clean end", () => {
  const input = concat(encodeChunk(text("bye")));
  assert.deepEqual(decodeChunkStream(input, true), { payload: text("bye"), ended: true });
  assert.deepEqual(byteByByte(input, true, true).payload, [...text("bye")]);
  assert.deepEqual(decodeChunkStream(new Uint8Array(), true), {
    payload: new Uint8Array(),
    ended: true,
  });
});

Deno.test("stream chunks: without the FIN the data is incomplete, not an error", () => {
  const input = concat(encodeChunk(text("part")), END_CHUNK);
  for (let cut = 0; cut <= input.length; cut++) {
    const { ended } = decodeChunkStream(input.subarray(0, cut), false);
    assert.equal(ended, false);
  }
});

Deno.test("stream chunks: a FIN inside a chunk is truncated_chunk", () => {
  const chunk = encodeChunk(text("truncated"));
  // Inside the header, right after a non-empty header, and inside the payload.
  for (const cut of [1, 2, 6, chunk.length - 1]) {
    assertFraming(() => decodeChunkStream(chunk.subarray(0, cut), true), "truncated_chunk");
    assertFraming(() => byteByByte(chunk.subarray(0, cut), true, true), "truncated_chunk");
    assertFraming(() => byteByByte(chunk.subarray(0, cut), true), "truncated_chunk");
  }
});

Deno.test("stream chunks: any byte after the end chunk is data_after_end", () => {
  const input = concat(encodeChunk(text("ok")), END_CHUNK, new Uint8Array([0x41]));
  assertFraming(() => decodeChunkStream(input, true), "data_after_end");
  assertFraming(() => decodeChunkStream(input, false), "data_after_end");
  assertFraming(
    () => decodeChunkStream(concat(END_CHUNK, encodeChunk(text("x"))), true),
    "data_after_end",
  );
});

Deno.test("stream chunks: a failed decoder refuses further input", () => {
  const decoder = createChunkDecoder();
  decoder.push(new Uint8Array([0]), false);
  assertFraming(() => decoder.push(new Uint8Array(0), true), "truncated_chunk");
  assert.equal(decoder.wanted(), 0);
  assert.throws(() => decoder.push(new Uint8Array(0), false), RangeError);
});

Deno.test("createChunkCounter: counts payload and chunks however the stream is split", () => {
  const stream = new Uint8Array([
    ...[9, 9, 9, 9, 9], // a 5-byte header written ahead of the chunks
    ...encodeChunk(new Uint8Array(300).fill(1)),
    ...encodeChunk(new Uint8Array(1).fill(2)),
    ...encodeChunk(new Uint8Array(70_000 - 65_535).fill(3)),
    ...END_CHUNK,
  ]);
  for (const step of [1, 2, 3, 7, 301, stream.length]) {
    const counter = createChunkCounter(5);
    for (let i = 0; i < stream.length; i += step) counter.push(stream.subarray(i, i + step));
    assert.equal(counter.payloadBytes, 300 + 1 + 4465, `step ${step}`);
    assert.equal(counter.chunks, 3, `step ${step}`);
  }
});
