/**
 * The control stream (bidirectional stream 0) of a ztna-edge connection: framed JSON
 * messages in, framed JSON messages out, with bounded buffering both ways.
 *
 * @module
 */
import type { QuicConnection } from "./quic/mod.ts";
import {
  type ControlMessage,
  createControlDecoder,
  encodeControl,
  ProtocolError,
  type ProtocolErrorReason,
} from "./protocol/control.ts";

/** The stream id of the control stream: the client's first bidirectional stream. */
export const CONTROL_STREAM_ID = 0;

/** Options for {@linkcode createControlChannel}. */
export interface ControlChannelOptions {
  /** Every decoded, schema-valid message, in order. */
  onMessage: (message: ControlMessage) => void;
  /**
   * The peer sent something that is not a valid control frame; the channel is dead and
   * the caller should close the connection with a protocol-violation code.
   */
  onProtocolError: (reason: ProtocolErrorReason | "send_buffer_full", detail: string) => void;
  /**
   * Largest frame accepted or sent.
   * @default {65536}
   */
  maxFrameBytes?: number;
  /**
   * Outgoing bytes buffered while the stream has no capacity before the channel fails.
   * @default {1048576}
   */
  maxPendingBytes?: number;
}

/** A control channel bound to one connection. */
export interface ControlChannel {
  /** Queues a message; returns false when the channel has failed. */
  send(message: ControlMessage): boolean;
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
 * ```ts ignore
 * const channel = createControlChannel(conn, { onMessage, onProtocolError });
 * conn.setHandlers({ onStreamReadable: (id) => id === 0 && channel.readable() });
 * channel.send({ type: "ping", seq: 1 });
 * ```
 */
export function createControlChannel(
  conn: QuicConnection,
  options: ControlChannelOptions,
): ControlChannel {
  const { onMessage, onProtocolError, maxFrameBytes = 65_536, maxPendingBytes = 1 << 20 } = options;
  const decoder = createControlDecoder({ maxFrameBytes });
  const readBuffer = sharedReadBuffer;
  const pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let failed = false;

  function fail(reason: ProtocolErrorReason | "send_buffer_full", detail: string): void {
    if (failed) return;
    failed = true;
    onProtocolError(reason, detail);
  }

  function flushPending(): void {
    while (pending.length > 0) {
      const head = pending[0];
      const written = conn.streamWrite(CONTROL_STREAM_ID, head);
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
      return true;
    },
    readable() {
      while (!failed) {
        const read = conn.streamRead(CONTROL_STREAM_ID, readBuffer);
        if (read === null) return;
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
          fail("invalid_message", "control stream closed by peer");
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
