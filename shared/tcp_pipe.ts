/**
 * Pumps bytes between a QUIC stream and a TCP socket, both ways, with backpressure.
 *
 * Each direction owns one fixed buffer and holds at most one chunk: the socket is not read
 * again until the stream has accepted the previous chunk (so TCP flow control slows a fast
 * local sender), and the stream is not read again until the socket has taken the previous
 * chunk (so QUIC flow control slows a fast remote sender). Memory per flow is two buffers,
 * whatever the rates.
 *
 * On the stream the bytes travel as length-prefixed chunks (see {@linkcode pipeStreamSocket};
 * the incoming ones are parsed by `protocol/stream_chunks.ts`).
 * The end of the data (end chunk and FIN) becomes a TCP half-close and a TCP EOF becomes the
 * end of the data. A stream reset, or a socket error (RST), ends the flow at once: the stream
 * is reset with `StreamCode.TCP_RESET` and the socket closed. Broken framing resets the stream
 * with `StreamCode.PROTOCOL_VIOLATION`.
 *
 * @module
 */
import type { QuicConnection } from "./quic/mod.ts";
import { StreamCode } from "./protocol/stream_header.ts";
import {
  CHUNK_HEADER_BYTES,
  ChunkFramingError,
  createChunkDecoder,
  END_CHUNK,
} from "./protocol/stream_chunks.ts";

/** How a pipe ended. */
export type PipeEndReason =
  /** Both directions finished with a FIN. */
  | "complete"
  /** The remote side reset the stream. */
  | "stream_reset"
  /** The TCP socket failed (reset by its peer). */
  | "socket_error"
  /** The stream's chunk framing was broken; the stream was reset. */
  | "protocol_violation"
  /** {@linkcode TcpPipe.abort} was called. */
  | "aborted";

/** What {@linkcode TcpPipeOptions.onEnd} receives. */
export interface PipeEnd {
  reason: PipeEndReason;
  /** Bytes read from the socket and written to the stream. */
  toStream: number;
  /** Bytes read from the stream and written to the socket. */
  toSocket: number;
  /** Chunks written to the stream (one per socket read). */
  chunksToStream: number;
  /** Non-empty chunks read from the stream. */
  chunksToSocket: number;
}

/** Options for {@linkcode pipeStreamSocket}. */
export interface TcpPipeOptions {
  conn: QuicConnection;
  streamId: number;
  socket: Deno.TcpConn;
  /**
   * Size of each direction's buffer (chunk header included): the most one direction
   * holds in memory. At most 65,537.
   * @default {32768}
   */
  bufferBytes?: number;
  /** Bytes written on the stream before any socket data (e.g. an `opened` header). */
  prefix?: Uint8Array;
  /** The stream's FIN was already read (it came with the header): half-close at once. */
  streamFinished?: boolean;
  /** Called once when the flow is over; the socket is closed by then. */
  onEnd(end: PipeEnd): void;
}

/** A running pipe; the owner routes the connection's stream events to it. */
export interface TcpPipe {
  /** Call from `onStreamReadable` for this stream. */
  readable(): void;
  /** Call from `onStreamWritable` for this stream. */
  writable(): void;
  /** Ends the flow now: resets the stream with `code` and closes the socket. */
  abort(code?: number): void;
  /** True once the pipe has ended. */
  readonly ended: boolean;
}

/**
 * Starts pumping between `socket` and stream `streamId` of `conn`.
 *
 * After the stream header, each direction of the stream carries chunks: `u16 length |
 * payload`, and a zero-length chunk sent together with the FIN marks the end of the data.
 * The marker exists because quiche 0.18 counts a stream's send side complete once its data
 * is acked, even when a FIN sent in a frame of its own is still unacknowledged: when the
 * other direction is finished as well the stream is collected and a lost lone FIN is never
 * sent again. A FIN that always rides on marker bytes is retransmitted with them.
 *
 * @example
 * ```ts
 * import type { QuicConnection } from "./quic/mod.ts";
 * import { pipeStreamSocket } from "./tcp_pipe.ts";
 *
 * // Given a relay session's connection and an accepted local TCP connection:
 * export function pipeToStream4(conn: QuicConnection, socket: Deno.TcpConn): void {
 *   const pipe = pipeStreamSocket({
 *     conn,
 *     streamId: 4,
 *     socket,
 *     onEnd: (end) => console.log(end.reason, end.toStream, end.toSocket),
 *   });
 *   conn.setHandlers({
 *     onStreamReadable: (id) => id === 4 && pipe.readable(),
 *     onStreamWritable: (id) => id === 4 && pipe.writable(),
 *   });
 * }
 * ```
 */
export function pipeStreamSocket(options: TcpPipeOptions): TcpPipe {
  const { conn, streamId, socket, bufferBytes = 32_768, onEnd } = options;
  if (
    !Number.isInteger(bufferBytes) || bufferBytes <= CHUNK_HEADER_BYTES ||
    bufferBytes > CHUNK_HEADER_BYTES + 0xffff
  ) {
    throw new RangeError(
      `Cannot pipe a stream as 'bufferBytes' must be an integer in 3..65537: current value is ${bufferBytes}`,
    );
  }
  const upBuffer = new Uint8Array(bufferBytes);
  const downBuffer = new Uint8Array(bufferBytes);
  /** The incoming chunk framing; it never asks for more than the current chunk holds. */
  const chunks = createChunkDecoder();
  let toStream = 0;
  let toSocket = 0;
  let chunksToStream = 0;
  let chunksToSocket = 0;
  let upFinished = false;
  let downFinished = false;
  let downBusy = false;
  let ended = false;
  /** The part of a chunk the stream has not accepted yet, and the FIN that goes with it. */
  let pendingWrite: Uint8Array | null = null;
  let pendingFin = false;
  let settleWrite: ((ok: boolean) => void) | null = null;

  function end(reason: PipeEndReason): void {
    if (ended) return;
    ended = true;
    try {
      socket.close();
    } catch {
      // Already closed.
    }
    settle(false);
    onEnd({ reason, toStream, toSocket, chunksToStream, chunksToSocket });
  }

  function fail(reason: PipeEndReason, code: number = StreamCode.TCP_RESET): void {
    if (ended) return;
    conn.streamReset(streamId, code);
    end(reason);
  }

  function maybeComplete(): void {
    if (upFinished && downFinished) end("complete");
  }

  /**
   * Writes all of `chunk`: true (synchronously) when the stream took it at once, otherwise
   * a promise settled by {@linkcode TcpPipe.writable} once the rest is written, false when
   * the stream is gone. The rest is written inside the `writable` callback itself, so the
   * connection sees the capacity used before it wakes the next blocked stream.
   */
  function writeStream(chunk: Uint8Array, fin: boolean): boolean | Promise<boolean> {
    let written: number;
    try {
      written = conn.streamWrite(streamId, chunk, fin);
    } catch {
      // The peer stopped (or reset) the stream.
      return false;
    }
    if (written === chunk.length) return true;
    pendingWrite = chunk.subarray(written);
    pendingFin = fin;
    return new Promise<boolean>((resolve) => settleWrite = resolve);
  }

  function continueWrite(): void {
    if (pendingWrite === null) return;
    if (ended || conn.closed) return settle(false);
    let written: number;
    try {
      written = conn.streamWrite(streamId, pendingWrite, pendingFin);
    } catch {
      return settle(false);
    }
    if (written === pendingWrite.length) settle(true);
    else pendingWrite = pendingWrite.subarray(written);
  }

  function settle(ok: boolean): void {
    const resolve = settleWrite;
    pendingWrite = null;
    settleWrite = null;
    resolve?.(ok);
  }

  /** Socket → stream: each read goes out as one chunk; EOF as the end chunk with the FIN. */
  async function pumpUp(): Promise<void> {
    if (options.prefix !== undefined && !await writeStream(options.prefix, false)) {
      return fail("stream_reset");
    }
    const payload = upBuffer.subarray(CHUNK_HEADER_BYTES);
    for (;;) {
      let n: number | null;
      try {
        n = await socket.read(payload);
      } catch {
        return fail("socket_error");
      }
      if (ended) return;
      if (n === null) {
        if (!await writeStream(END_CHUNK, true)) return fail("stream_reset");
        upFinished = true;
        return maybeComplete();
      }
      upBuffer[0] = n >> 8;
      upBuffer[1] = n & 0xff;
      if (!await writeStream(upBuffer.subarray(0, CHUNK_HEADER_BYTES + n), false)) {
        return fail("stream_reset");
      }
      toStream += n;
      chunksToStream++;
    }
  }

  /**
   * Reads the next piece of the chunk stream: a header (or its rest) or payload, never past
   * the current chunk, so what the socket cannot take yet stays in quiche. Returns the
   * payload bytes in `downBuffer` (0 for a header), null when nothing is readable, or
   * "end" once the data is complete.
   */
  function readChunked(): number | null | "end" | "reset" | "malformed" {
    if (chunks.ended) return "end";
    const inPayload = chunks.phase === "payload";
    // A header (at most 2 bytes) or the probe byte after the end chunk also lands in
    // `downBuffer`: it holds nothing else between reads.
    const result = conn.streamRead(
      streamId,
      downBuffer.subarray(0, Math.min(chunks.wanted(), downBuffer.length)),
    );
    if (result === null) return null;
    if (result.resetCode !== undefined) return "reset";
    let payload: Uint8Array;
    try {
      payload = chunks.push(downBuffer.subarray(0, result.bytes), result.fin);
    } catch (error) {
      if (error instanceof ChunkFramingError) return "malformed";
      throw error;
    }
    if (inPayload) return payload.length;
    // A header just completed that opens a non-empty chunk.
    // (`phase` is read again after the push, which TypeScript's narrowing does not see.)
    if ((chunks.phase as string) === "payload") chunksToSocket++;
    if (chunks.ended) return "end";
    return result.bytes === 0 ? null : 0;
  }

  async function pumpDown(): Promise<void> {
    downBusy = true;
    try {
      while (!ended && !downFinished) {
        const result = readChunked();
        if (result === null) return;
        if (result === "reset") return fail("stream_reset");
        if (result === "malformed") {
          return fail("protocol_violation", StreamCode.PROTOCOL_VIOLATION);
        }
        if (result === "end") {
          // Half-close: the local peer sees EOF and may still send.
          await socket.closeWrite();
          downFinished = true;
          return maybeComplete();
        }
        let chunk = downBuffer.subarray(0, result);
        while (chunk.length > 0) {
          const written = await socket.write(chunk);
          chunk = chunk.subarray(written);
        }
        toSocket += result;
      }
    } catch {
      fail("socket_error");
    } finally {
      downBusy = false;
    }
  }

  pumpUp();
  if (options.streamFinished) {
    downBusy = true;
    socket.closeWrite().then(() => {
      downFinished = true;
      maybeComplete();
    }, () => fail("socket_error"));
  }
  return {
    readable() {
      // While a socket write is in flight the stream stays unread: that is the backpressure.
      if (!ended && !downBusy) pumpDown();
    },
    writable() {
      continueWrite();
    },
    abort(code = StreamCode.GOING_AWAY) {
      if (ended) return;
      conn.streamReset(streamId, code);
      end("aborted");
    },
    get ended() {
      return ended;
    },
  };
}
