/**
 * The control stream (bidirectional stream 0) of a ztna-edge connection: framed JSON
 * messages in, framed JSON messages out, with bounded buffering both ways.
 *
 * @module
 */
import { type QuicConnection, StreamGoneError } from "./quic/mod.ts";
import {
  type ControlMessage,
  createControlDecoder,
  encodeControl,
  ProtocolError,
  type ProtocolErrorReason,
} from "./protocol/control.ts";

/** The stream id of the control stream: the client's first bidirectional stream. */
export const CONTROL_STREAM_ID = 0;

/** Why a control channel failed. */
export type ControlChannelFailure =
  | ProtocolErrorReason
  | "send_buffer_full"
  | "control_stream_closed";

/** Options for {@linkcode createControlChannel}. */
export interface ControlChannelOptions {
  /** Every decoded, schema-valid message, in order. */
  onMessage: (message: ControlMessage) => void;
  /**
   * The channel is dead: the peer sent something that is not a valid control frame, or it
   * finished, reset or stopped the control stream (`control_stream_closed`). The caller
   * should close the connection with a protocol-violation code. Never called twice.
   */
  onProtocolError: (reason: ControlChannelFailure, detail: string) => void;
  /**
   * Largest frame accepted or sent.
   * @default {65536}
   */
  maxFrameBytes?: number;
  /**
   * Largest frame accepted from the peer until {@linkcode ControlChannel.setMaxFrameBytes}
   * raises it (e.g. once the peer authenticated); `maxFrameBytes` when absent.
   */
  initialMaxFrameBytes?: number;
  /**
   * Outgoing bytes buffered while the stream has no capacity before the channel fails.
   * @default {1048576}
   */
  maxPendingBytes?: number;
}

/** A control channel bound to one connection. */
export interface ControlChannel {
  /**
   * Queues a message; returns false when the channel has failed. Never throws: a stream the
   * peer stopped fails the channel (reported through `onProtocolError`), so a caller looping
   * over many peers (a policy reload, an announcement) reaches all of them.
   */
  send(message: ControlMessage): boolean;
  /** Changes the largest frame accepted from the peer (raised once it authenticated). */
  setMaxFrameBytes(maxFrameBytes: number): void;
  /** Call from the connection's `onStreamReadable` for the control stream. */
  readable(): void;
  /** Call from the connection's `onStreamWritable` for the control stream. */
  writable(): void;
  /** True once a protocol error or a peer FIN ended the channel. */
  readonly failed: boolean;
}

/**
 * One read buffer for every channel of the process: `readable()` decodes each chunk before
 * anything else can run (the decoder copies partial frames), so channels never share bytes
 * in flight. Per channel it was 16 KiB of every relay connection's memory.
 */
const sharedReadBuffer = new Uint8Array(16_384);

/**
 * Creates the control channel of `conn`.
 *
 * @example
 * ```ts
 * import { CloseCode, type QuicConnection } from "./quic/mod.ts";
 * import { CONTROL_STREAM_ID, createControlChannel } from "./control_channel.ts";
 *
 * export function openControl(conn: QuicConnection): void {
 *   const channel = createControlChannel(conn, {
 *     onMessage: (message) => console.log(message.type),
 *     onProtocolError: (reason) => conn.close(CloseCode.PROTOCOL_VIOLATION, reason),
 *   });
 *   conn.setHandlers({
 *     onStreamReadable: (id) => id === CONTROL_STREAM_ID && channel.readable(),
 *     onStreamWritable: (id) => id === CONTROL_STREAM_ID && channel.writable(),
 *   });
 *   channel.send({ type: "ping", seq: 1 });
 * }
 * ```
 */
export function createControlChannel(
  conn: QuicConnection,
  options: ControlChannelOptions,
): ControlChannel {
  const { onMessage, onProtocolError, maxFrameBytes = 65_536, maxPendingBytes = 1 << 20 } = options;
  const decoder = createControlDecoder({
    maxFrameBytes: options.initialMaxFrameBytes ?? maxFrameBytes,
  });
  const readBuffer = sharedReadBuffer;
  const pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let failed = false;

  function fail(reason: ControlChannelFailure, detail: string): void {
    if (failed) return;
    failed = true;
    onProtocolError(reason, detail);
  }

  function flushPending(): void {
    while (pending.length > 0 && !failed) {
      const head = pending[0];
      let written: number;
      try {
        written = conn.streamWrite(CONTROL_STREAM_ID, head);
      } catch (error) {
        if (!(error instanceof StreamGoneError)) throw error;
        pending.length = 0;
        pendingBytes = 0;
        fail("control_stream_closed", error.message);
        return;
      }
      pendingBytes -= written;
      if (written < head.length) {
        pending[0] = head.subarray(written);
        return;
      }
      pending.shift();
    }
  }

  return {
    send(message) {
      if (failed || conn.closed) return false;
      const frame = encodeControl(message, { maxFrameBytes });
      pending.push(frame);
      pendingBytes += frame.length;
      if (pendingBytes > maxPendingBytes) {
        fail("send_buffer_full", `more than ${maxPendingBytes} control bytes unsent`);
        return false;
      }
      flushPending();
      return !failed;
    },
    setMaxFrameBytes(value) {
      decoder.maxFrameBytes = value;
    },
    readable() {
      while (!failed) {
        const read = conn.streamRead(CONTROL_STREAM_ID, readBuffer);
        if (read === null) return;
        if (read.resetCode !== undefined) {
          fail("control_stream_closed", `control stream reset by peer (code ${read.resetCode})`);
          return;
        }
        let messages: ControlMessage[];
        try {
          messages = decoder.push(readBuffer.subarray(0, read.bytes));
        } catch (error) {
          if (error instanceof ProtocolError) {
            fail(error.reason, error.message);
            return;
          }
          throw error;
        }
        for (const message of messages) {
          if (failed) return;
          onMessage(message);
        }
        if (read.fin) {
          fail("control_stream_closed", "control stream finished by peer");
          return;
        }
      }
    },
    writable: flushPending,
    get failed() {
      return failed;
    },
  };
}
