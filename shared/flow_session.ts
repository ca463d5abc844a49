/**
 * A connection that carries flows: its QUIC connection, a control channel for UDP-flow
 * opens and closes, and a label for logs. An agent and a connector carry their flows over
 * the end-to-end session between them (`quic/e2e_session.ts`); this module gives such a
 * session its control channel on stream 0 and routes its events, the same way for both ends.
 *
 * @module
 */
import { CONTROL_STREAM_ID, createControlChannel } from "./control_channel.ts";
import type { ControlMessage } from "./protocol/control.ts";
import { CloseCode, type CloseInfo, describeClose, type QuicConnection } from "./quic/mod.ts";
import type { E2eSession, E2eSessionOptions } from "./quic/e2e_session.ts";

/** A connection that carries flows, and its control channel. */
export interface FlowSession {
  /** The relay carrying the connection now (`host:port`), for logs and audit records. */
  readonly relay: string;
  /** The QUIC connection. */
  readonly conn: QuicConnection;
  /** Sends a control message; false when the channel is gone. */
  send(message: ControlMessage): boolean;
}

/** What an end-to-end session tells its owner. */
export interface FlowSessionHandlers {
  /** The handshake completed with the announced peer: flows may open. */
  onUp(session: FlowSession): void;
  /** A control message (stream 0). */
  onMessage(session: FlowSession, message: ControlMessage): void;
  /** A DATAGRAM frame (valid only during the call). */
  onDatagram(session: FlowSession, frame: Uint8Array): void;
  /** A stream other than the control stream became readable. */
  onStreamReadable(session: FlowSession, streamId: number): void;
  /** A stream other than the control stream has capacity again. */
  onStreamWritable(session: FlowSession, streamId: number): void;
  /** The session ended; `up` tells whether `onUp` came first. */
  onDown(session: FlowSession, reason: string, up: boolean): void;
}

/** An end-to-end session with its flow-carrying view. */
export interface CarriedSession {
  /** The end-to-end session (paths, keepalive). */
  readonly e2e: E2eSession;
  /** Its flow view: connection, control channel, relay label. */
  readonly flows: FlowSession;
}

/**
 * Starts an end-to-end session with `start` (`openE2eSession` or `acceptE2eSession`) and
 * wires it to `handlers`: stream 0 is a control channel (a malformed frame closes the session
 * PROTOCOL_VIOLATION), every other stream and every DATAGRAM goes to the handlers. Returns
 * null when `start` does.
 *
 * @example
 * ```ts ignore
 * const carried = carryFlows((handlers) => openE2eSession({ ...options, handlers }), events);
 * ```
 */
export function carryFlows(
  start: (handlers: E2eSessionOptions["handlers"]) => E2eSession | null,
  handlers: FlowSessionHandlers,
): CarriedSession | null {
  let e2e: E2eSession | null = null;
  let up = false;
  let endReason = "closed";
  // The connection exists once `start` returns; its handlers run only after that.
  const connOf = () => e2e!.conn;
  const control = {
    channel: null as ReturnType<typeof createControlChannel> | null,
  };
  const channel = () =>
    control.channel ??= createControlChannel(connOf(), {
      onMessage: (message) => handlers.onMessage(flows, message),
      onProtocolError(reason, detail) {
        endReason = `protocol error: ${reason} (${detail})`;
        connOf().close(CloseCode.PROTOCOL_VIOLATION, reason);
      },
    });
  const flows: FlowSession = {
    get relay() {
      return e2e?.path?.label ?? "";
    },
    get conn() {
      return connOf();
    },
    send: (message) => channel().send(message),
  };
  e2e = start({
    onEstablished() {
      up = true;
      handlers.onUp(flows);
    },
    onDatagram: (frame) => up && handlers.onDatagram(flows, frame),
    onStreamReadable(streamId) {
      if (!up) return;
      if (streamId === CONTROL_STREAM_ID) channel().readable();
      else handlers.onStreamReadable(flows, streamId);
    },
    onStreamWritable(streamId) {
      if (!up) return;
      if (streamId === CONTROL_STREAM_ID) channel().writable();
      else handlers.onStreamWritable(flows, streamId);
    },
    onClosed: (info: CloseInfo) => handlers.onDown(flows, describeClose(info, endReason), up),
  });
  return e2e === null ? null : { e2e, flows };
}
