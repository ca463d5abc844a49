/**
 * A connection that carries flows: its QUIC connection, a control channel for UDP-flow
 * opens and closes, and a label for logs. An agent and a connector carry their flows over
 * the end-to-end session between them (`quic/e2e_session.ts`); this module gives such a
 * session its control channel on stream 0 and routes its events, the same way for both ends.
 *
 * @module
 */
import { CONTROL_STREAM_ID, createControlChannel } from "./control_channel.ts";
import type { Logger } from "./log.ts";
import type { EdgeMetrics } from "./ops/edge_metrics.ts";
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

/** How a session's life is counted and logged: the same at both ends. */
export interface SessionLife {
  metrics: EdgeMetrics;
  logger: Logger;
  /** The peer: its role and the identity the relay announced for it. */
  peer: { role: "agent" | "connector"; identity: string };
  /** A session whose handshake has not completed in this time is closed. */
  handshakeTimeoutMs: number;
  /**
   * The session will carry no flow (wrong peer identity, handshake timeout or failure). Told
   * once, as soon as that is known: for a wrong identity before the close completes.
   */
  onFailed?(reason: string, refusal: "forbidden" | "unavailable"): void;
}

/** What {@linkcode carryFlows} hands `start` for the end-to-end session's options. */
export type SessionHooks = Pick<
  E2eSessionOptions,
  "handlers" | "onIdentityMismatch" | "onPathSwitch"
>;

/** An end-to-end session with its flow-carrying view. */
export interface CarriedSession {
  /** The end-to-end session (paths, keepalive). */
  readonly e2e: E2eSession;
  /** Its flow view: connection, control channel, relay label. */
  readonly flows: FlowSession;
}

/**
 * Starts an end-to-end session with `start` (`openE2eSession` or `acceptE2eSession`, given
 * `hooks`) and wires it to `handlers`: stream 0 is a control channel (a malformed frame closes
 * the session PROTOCOL_VIOLATION), every other stream and every DATAGRAM goes to the
 * handlers. Its life is counted and logged per `life`: `sessions_opened_total`,
 * `sessions_active`, `session_refusals_total{reason}` (identity_mismatch, handshake_timeout,
 * handshake_failed) and `path_switches_total{cause}`. Returns null when `start` does.
 *
 * @example
 * ```ts ignore
 * const carried = carryFlows((hooks) => openE2eSession({ ...options, ...hooks }), events, life);
 * ```
 */
export function carryFlows(
  start: (hooks: SessionHooks) => E2eSession | null,
  handlers: FlowSessionHandlers,
  life: SessionLife,
): CarriedSession | null {
  const { metrics, logger, peer } = life;
  const who = { [peer.role]: peer.identity };
  let e2e: E2eSession | null = null;
  let up = false;
  let endReason = "closed";
  /** Told `onFailed` already; a more precise refusal reason was counted. */
  let failed = false;
  // A handshake that never finishes holds a session slot: bounded in time.
  const deadline = setTimeout(() => {
    if (up || e2e === null || e2e.conn.closed) return;
    fail("end-to-end handshake timed out", "handshake_timeout");
    e2e.conn.close(CloseCode.GOING_AWAY, "handshake timeout");
  }, life.handshakeTimeoutMs);
  const fail = (reason: string, counted: string) => {
    if (failed) return;
    failed = true;
    metrics.sessionRefusals.inc({ reason: counted });
    life.onFailed?.(reason, counted === "identity_mismatch" ? "forbidden" : "unavailable");
  };
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
    onIdentityMismatch(presented) {
      logger.warn(`end-to-end session refused: peer is not the announced ${peer.role}`, {
        announced: peer.identity,
        presented,
      });
      fail(`the ${peer.role}'s identity is not the announced one`, "identity_mismatch");
    },
    onPathSwitch(from, to, cause) {
      metrics.pathSwitches.inc({ cause });
      logger.info("end-to-end session moved", {
        ...who,
        from: from?.label ?? null,
        to: to.label,
        cause,
      });
    },
    handlers: {
      onEstablished() {
        up = true;
        clearTimeout(deadline);
        metrics.sessionsOpened.inc();
        metrics.sessionsActive.inc();
        logger.info("end-to-end session up", { ...who, relay: flows.relay });
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
      onClosed(info: CloseInfo) {
        clearTimeout(deadline);
        const reason = describeClose(info, endReason);
        if (up) {
          metrics.sessionsActive.dec();
          logger.info("end-to-end session ended", { ...who, reason });
        } else {
          logger.warn("end-to-end handshake failed", { ...who, reason });
          fail(`end-to-end session failed: ${reason}`, "handshake_failed");
        }
        handlers.onDown(flows, reason, up);
      },
    },
  });
  if (e2e === null) {
    clearTimeout(deadline);
    return null;
  }
  return { e2e, flows };
}
