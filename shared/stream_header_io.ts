/**
 * Reading and writing the header of a TCP-flow stream on a {@linkcode QuicConnection}.
 *
 * The reader pulls exactly the header's bytes off the stream, so payload sent right behind
 * it stays in quiche (under flow control) until a pipe starts. The writer keeps the few
 * header bytes a congested connection did not accept and finishes them on `writable`.
 *
 * @module
 */
import type { QuicConnection } from "./quic/mod.ts";
import { ProtocolError } from "./protocol/control.ts";
import {
  createStreamHeaderDecoder,
  encodeStreamHeader,
  END_CHUNK,
  StreamCode,
  type StreamHeader,
} from "./protocol/stream_header.ts";

/** The outcome of {@linkcode StreamHeaderReader.read}. */
export type HeaderRead =
  | { kind: "pending" }
  /** `fin`: the stream also ended right after the header. */
  | { kind: "header"; header: StreamHeader; fin: boolean }
  | { kind: "invalid"; detail: string }
  | { kind: "reset"; code: number }
  | { kind: "fin" };

/** Reads one header from a stream, across as many `readable` events as it takes. */
export interface StreamHeaderReader {
  /** Reads what is available; call on every `readable` event until it is not pending. */
  read(): HeaderRead;
}

/**
 * Creates a header reader for `streamId` on `conn`.
 *
 * @example
 * ```ts
 * import type { QuicConnection } from "./quic/mod.ts";
 * import { createStreamHeaderReader } from "./stream_header_io.ts";
 *
 * // Called on every readable event of stream 4 until the header is in.
 * export function readOpen(conn: QuicConnection): string | null {
 *   const result = createStreamHeaderReader(conn, 4).read();
 *   return result.kind === "header" && result.header.type === "open"
 *     ? result.header.service
 *     : null;
 * }
 * ```
 */
export function createStreamHeaderReader(
  conn: QuicConnection,
  streamId: number,
): StreamHeaderReader {
  const decoder = createStreamHeaderDecoder();
  const buffer = new Uint8Array(1024);
  return {
    read() {
      for (;;) {
        const wanted = decoder.wanted();
        const result = conn.streamRead(streamId, buffer.subarray(0, wanted));
        if (result === null) return { kind: "pending" };
        if (result.resetCode !== undefined) return { kind: "reset", code: result.resetCode };
        try {
          const header = result.bytes > 0 ? decoder.push(buffer.subarray(0, result.bytes)) : null;
          if (header !== null) return { kind: "header", header, fin: result.fin };
        } catch (error) {
          if (error instanceof ProtocolError) return { kind: "invalid", detail: error.message };
          throw error;
        }
        // A FIN before the header completed: the opener gave up.
        if (result.fin) return { kind: "fin" };
        if (result.bytes === 0) return { kind: "pending" };
      }
    },
  };
}

/** Header bytes still to be written on a stream. */
export interface PendingWrite {
  /** Writes what the stream accepts now; true once every byte (and the FIN) is out. */
  flush(): boolean;
  /** True once every byte is written. */
  readonly done: boolean;
}

/**
 * Writes `header` on `streamId` (finishing the stream after it when `fin`); whatever the
 * connection does not accept now is kept and written by {@linkcode PendingWrite.flush},
 * to be called from `onStreamWritable`. Returns null when the stream is gone (stopped or
 * reset by the peer).
 */
export function writeStreamHeader(
  conn: QuicConnection,
  streamId: number,
  header: StreamHeader,
  fin = false,
): PendingWrite | null {
  let rest: Uint8Array | null = encodeStreamHeader(header);
  const pending: PendingWrite = {
    flush() {
      if (rest === null) return true;
      const written = conn.streamWrite(streamId, rest, fin);
      rest = written === rest.length ? null : rest.subarray(written);
      return rest === null;
    },
    get done() {
      return rest === null;
    },
  };
  try {
    pending.flush();
  } catch {
    // quiche refuses writes on a stream the peer stopped or reset.
    return null;
  }
  return {
    flush() {
      try {
        return pending.flush();
      } catch {
        // Stopped or reset meanwhile: the stream's readable side reports it.
        rest = null;
        return true;
      }
    },
    get done() {
      return rest === null;
    },
  };
}

/**
 * Ends our side of a stream whose answer ended the flow (after a `refused`): the end chunk
 * with the FIN, or a reset when the stream has no room for it now. Returns false when the
 * stream is already gone (stopped or reset by the peer).
 */
export function finishStream(conn: QuicConnection, streamId: number): boolean {
  try {
    if (conn.streamWrite(streamId, END_CHUNK, true) < END_CHUNK.length) {
      conn.streamReset(streamId, StreamCode.GOING_AWAY);
    }
    return true;
  } catch {
    return false;
  }
}
