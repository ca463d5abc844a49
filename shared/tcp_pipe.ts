/**
 * Pumps bytes between a QUIC stream and a TCP socket, both ways, with backpressure.
 *
 * Each direction owns one fixed buffer and holds at most one chunk: the socket is not read
 * again until the stream has accepted the previous chunk (so TCP flow control slows a fast
 * local sender), and the stream is not read again until the socket has taken the previous
 * chunk (so QUIC flow control slows a fast remote sender). Memory per flow is two buffers,
 * whatever the rates.
 *
 * A FIN becomes a TCP half-close and a TCP EOF becomes a FIN. A stream reset, or a socket
 * error (RST), ends the flow at once: the stream is reset with `StreamCode.TCP_RESET` and the
 * socket closed.
 *
 * @module
 */
import type { QuicConnection } from "./quic/mod.ts";
import { StreamCode } from "./protocol/stream_header.ts";

/** How a pipe ended. */
export type PipeEndReason =
  /** Both directions finished with a FIN. */
  | "complete"
  /** The remote side reset the stream. */
  | "stream_reset"
  /** The TCP socket failed (reset by its peer). */
  | "socket_error"
  /** {@linkcode TcpPipe.abort} was called. */
  | "aborted";

/** What {@linkcode TcpPipeOptions.onEnd} receives. */
export interface PipeEnd {
  reason: PipeEndReason;
  /** Bytes read from the socket and written to the stream. */
  toStream: number;
  /** Bytes read from the stream and written to the socket. */
  toSocket: number;
}

/** Options for {@linkcode pipeStreamSocket}. */
export interface TcpPipeOptions {
  conn: QuicConnection;
  streamId: number;
  socket: Deno.TcpConn;
  /**
   * Size of each direction's buffer: the most one direction holds in memory.
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

/** How long a byte held back to carry the FIN waits for the socket's EOF (see `pumpUp`). */
const FIN_CARRIER_HOLD_MS = 100;

/** True when `promise` settles (either way) within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => timer = setTimeout(resolve, ms, false));
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts pumping between `socket` and stream `streamId` of `conn`.
 *
 * @example
 * ```ts ignore
 * const pipe = pipeStreamSocket({ conn, streamId: 4, socket, onEnd: (end) => log(end) });
 * // from the connection handlers:
 * onStreamReadable: (id) => id === 4 && pipe.readable(),
 * onStreamWritable: (id) => id === 4 && pipe.writable(),
 * ```
 */
export function pipeStreamSocket(options: TcpPipeOptions): TcpPipe {
  const { conn, streamId, socket, bufferBytes = 32_768, onEnd } = options;
  if (!Number.isInteger(bufferBytes) || bufferBytes < 1) {
    throw new RangeError(
      `Cannot pipe a stream as 'bufferBytes' must be a positive integer: current value is ${bufferBytes}`,
    );
  }
  const upBuffer = new Uint8Array(bufferBytes);
  const downBuffer = new Uint8Array(bufferBytes);
  let toStream = 0;
  let toSocket = 0;
  let upFinished = false;
  let downFinished = false;
  let downBusy = false;
  let ended = false;
  let wakeUp: (() => void) | null = null;

  function end(reason: PipeEndReason): void {
    if (ended) return;
    ended = true;
    try {
      socket.close();
    } catch {
      // Already closed.
    }
    wakeUp?.();
    onEnd({ reason, toStream, toSocket });
  }

  function fail(reason: PipeEndReason): void {
    if (ended) return;
    conn.streamReset(streamId, StreamCode.TCP_RESET);
    end(reason);
  }

  function maybeComplete(): void {
    if (upFinished && downFinished) end("complete");
  }

  /** Writes all of `chunk` (waiting for capacity); false when the stream is gone. */
  async function writeStream(chunk: Uint8Array, fin: boolean): Promise<boolean> {
    for (;;) {
      let written: number;
      try {
        written = conn.streamWrite(streamId, chunk, fin);
      } catch {
        // The peer stopped (or reset) the stream.
        return false;
      }
      if (written === chunk.length) return true;
      chunk = chunk.subarray(written);
      await new Promise<void>((resolve) => wakeUp = resolve);
      wakeUp = null;
      if (ended || conn.closed) return false;
    }
  }

  /**
   * Socket → stream. Once the stream's far side has finished (its FIN is read), quiche 0.18
   * counts our side complete as soon as our data is acked, without waiting for the ack of a
   * FIN sent alone; the stream is then collected and a lost FIN-only packet is never sent
   * again, so the far end waits forever. From then on the last byte of each read is held
   * back (at most {@linkcode FIN_CARRIER_HOLD_MS}) so that an EOF can ride on it as data.
   */
  async function pumpUp(): Promise<void> {
    if (options.prefix !== undefined && !await writeStream(options.prefix, false)) {
      return fail("stream_reset");
    }
    /** `upBuffer[0]` is a byte not yet written, kept to carry the FIN. */
    let held = false;
    for (;;) {
      const start = held ? 1 : 0;
      let n: number | null;
      try {
        const reading = socket.read(upBuffer.subarray(start));
        if (held && !await settlesWithin(reading, FIN_CARRIER_HOLD_MS)) {
          // The socket stays quiet: the byte goes alone, not delayed any longer.
          if (!await writeStream(upBuffer.subarray(0, 1), false)) return fail("stream_reset");
          toStream += 1;
          held = false;
        }
        n = await reading;
      } catch {
        return fail("socket_error");
      }
      if (ended) return;
      const from = held ? 0 : start;
      if (n === null) {
        if (!await writeStream(upBuffer.subarray(from, start), true)) return fail("stream_reset");
        toStream += start - from;
        upFinished = true;
        return maybeComplete();
      }
      held = downFinished;
      const to = start + n - (held ? 1 : 0);
      if (to > from && !await writeStream(upBuffer.subarray(from, to), false)) {
        return fail("stream_reset");
      }
      toStream += to - from;
      if (held) upBuffer[0] = upBuffer[to];
    }
  }

  async function pumpDown(): Promise<void> {
    downBusy = true;
    try {
      while (!ended && !downFinished) {
        const result = conn.streamRead(streamId, downBuffer);
        if (result === null) return;
        if (result.resetCode !== undefined) return fail("stream_reset");
        let chunk = downBuffer.subarray(0, result.bytes);
        while (chunk.length > 0) {
          const written = await socket.write(chunk);
          chunk = chunk.subarray(written);
        }
        toSocket += result.bytes;
        if (ended) return;
        if (result.fin) {
          // Half-close: the local peer sees EOF and may still send.
          await socket.closeWrite();
          downFinished = true;
          return maybeComplete();
        }
        if (result.bytes === 0) return;
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
      wakeUp?.();
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
