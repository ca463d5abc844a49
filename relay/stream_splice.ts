/**
 * Splices two QUIC streams (an agent's and a connector's) into one TCP flow, both ways,
 * with backpressure.
 *
 * Each direction has one fixed buffer and at most one pending chunk: when the destination
 * stream accepts less than was read, the rest waits for its `writable` event and the source
 * stream is not read meanwhile. Unread bytes stay in quiche under the source's flow-control
 * window, so the sender slows down instead of the relay buffering.
 *
 * @module
 */
import type { QuicConnection } from "../shared/quic/mod.ts";
import { StreamCode } from "../shared/protocol/stream_header.ts";

/** One stream of a splice. */
export interface StreamEnd {
  conn: QuicConnection;
  streamId: number;
}

/** Which end an event belongs to. */
export type SpliceSide = "a" | "b";

/** How a splice ended. */
export type SpliceEndReason = "complete" | "reset" | "aborted";

/** Options for {@linkcode spliceStreams}. */
export interface SpliceOptions {
  a: StreamEnd;
  b: StreamEnd;
  /**
   * Size of each direction's buffer.
   * @default {32768}
   */
  bufferBytes?: number;
  /** Bytes written to `a` before anything read from `b` (e.g. the `opened` header). */
  prefixToA?: Uint8Array;
  /** Stream `b` already ended (its FIN came with the header before the splice). */
  finFromB?: boolean;
  /**
   * Counts bytes moved (`toB` true for a → b); `data` are the bytes written (valid during
   * the call only), for a caller that follows the chunk framing.
   */
  onBytes?(toB: boolean, bytes: number, data: Uint8Array): void;
  /** Called once when both directions finished, or either was reset. */
  onEnd(reason: SpliceEndReason): void;
}

/** A running splice; the owner routes both streams' events to it. */
export interface Splice {
  /** Stream `side` has data, a FIN or a reset. */
  readable(side: SpliceSide): void;
  /** Stream `side` has capacity again. */
  writable(side: SpliceSide): void;
  /** Resets both streams with `code` and ends the splice. */
  abort(code: number): void;
}

interface Direction {
  from: StreamEnd;
  to: StreamEnd;
  toB: boolean;
  buffer: Uint8Array;
  /** Bytes read from `from` that `to` has not accepted yet (a view into `buffer`). */
  pending: Uint8Array | null;
  /** The FIN that goes after `pending`. */
  pendingFin: boolean;
  finished: boolean;
}

const EMPTY = new Uint8Array(0);

/**
 * Starts splicing streams `a` and `b`.
 *
 * @example
 * ```ts
 * import type { QuicConnection } from "../shared/quic/mod.ts";
 * import { spliceStreams } from "./stream_splice.ts";
 *
 * export function splice(agent: QuicConnection, connector: QuicConnection): void {
 *   const splice = spliceStreams({
 *     a: { conn: agent, streamId: 4 },
 *     b: { conn: connector, streamId: 1 },
 *     onEnd: (reason) => console.log(reason),
 *   });
 *   splice.readable("a"); // drain what arrived while the flow was being opened
 * }
 * ```
 */
export function spliceStreams(options: SpliceOptions): Splice {
  const { a, b, bufferBytes = 32_768, onBytes, onEnd } = options;
  let ended = false;
  const make = (from: StreamEnd, to: StreamEnd, toB: boolean): Direction => ({
    from,
    to,
    toB,
    buffer: new Uint8Array(bufferBytes),
    pending: null,
    pendingFin: false,
    finished: false,
  });
  const aToB = make(a, b, true);
  const bToA = make(b, a, false);
  if (options.prefixToA !== undefined && options.prefixToA.length > 0) {
    bToA.pending = options.prefixToA;
  }
  bToA.pendingFin = options.finFromB ?? false;

  function end(reason: SpliceEndReason): void {
    if (ended) return;
    ended = true;
    onEnd(reason);
  }

  function resetBoth(code: number): void {
    a.conn.streamReset(a.streamId, code);
    b.conn.streamReset(b.streamId, code);
  }

  /** Writes to `to`; the bytes accepted, or -1 when the stream was stopped or reset. */
  function write(to: StreamEnd, data: Uint8Array, fin: boolean): number {
    try {
      return to.conn.streamWrite(to.streamId, data, fin);
    } catch {
      return -1;
    }
  }

  /** Moves what it can from `d.from` to `d.to`; returns when either side must wait. */
  function pump(d: Direction): void {
    if (ended || d.finished) return;
    if (d.pending !== null) {
      const written = write(d.to, d.pending, d.pendingFin);
      if (written < 0) return gone();
      onBytes?.(d.toB, written, d.pending.subarray(0, written));
      if (written < d.pending.length) {
        d.pending = d.pending.subarray(written);
        return;
      }
      d.pending = null;
      if (d.pendingFin) return finish(d);
    }
    for (;;) {
      if (d.pendingFin) {
        if (write(d.to, EMPTY, true) < 0) return gone();
        return finish(d);
      }
      const result = d.from.conn.streamRead(d.from.streamId, d.buffer);
      if (result === null) return;
      if (result.resetCode !== undefined) {
        // A TCP reset at one end becomes a reset of the other end's stream.
        resetBoth(StreamCode.TCP_RESET);
        return end("reset");
      }
      d.pendingFin = result.fin;
      if (result.bytes > 0) {
        const chunk = d.buffer.subarray(0, result.bytes);
        // The FIN rides with the data: quiche 0.18 may never resend a FIN sent alone once
        // the stream's other direction is done too (see shared/tcp_pipe.ts). The ends send
        // it with the bytes of an end chunk, so it arrives here with data as well.
        const written = write(d.to, chunk, result.fin);
        if (written < 0) return gone();
        onBytes?.(d.toB, written, chunk.subarray(0, written));
        if (written < chunk.length) {
          d.pending = chunk.subarray(written);
          return;
        }
        if (result.fin) return finish(d);
      } else if (!result.fin) {
        return;
      }
    }
  }

  /** `d` wrote its FIN: the splice is complete once both directions have. */
  function finish(d: Direction): void {
    d.pendingFin = false;
    d.finished = true;
    if (aToB.finished && bToA.finished) end("complete");
  }

  function gone(): void {
    resetBoth(StreamCode.TCP_RESET);
    end("reset");
  }

  return {
    readable(side) {
      const d = side === "a" ? aToB : bToA;
      // While the destination holds a pending chunk, only its `writable` event can help:
      // retrying the write on every packet that makes the source readable costs a native
      // call per blocked flow per packet.
      if (d.pending === null) pump(d);
    },
    writable(side) {
      pump(side === "a" ? bToA : aToB);
    },
    abort(code) {
      if (ended) return;
      resetBoth(code);
      end("aborted");
    },
  };
}
