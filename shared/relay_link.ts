/**
 * A connector's or agent's link to one relay: dial, authenticate (mTLS plus `hello`),
 * keep alive, and redial with backoff until shutdown.
 *
 * @module
 */
import { type Backoff, createBackoff, sleep } from "./backoff.ts";
import { CONTROL_STREAM_ID, type ControlChannel, createControlChannel } from "./control_channel.ts";
import { formatHostPort } from "./config/address.ts";
import type { Logger } from "./log.ts";
import { resolveHost } from "./resolve_host.ts";
import { type ControlMessage, PROTOCOL_VERSION } from "./protocol/control.ts";
import {
  CloseCode,
  type CloseInfo,
  connectQuic,
  describeClose,
  type HandlerErrorReporter,
  type HostPort,
  type QuicClientConnection,
  type TlsMaterial,
} from "./quic/mod.ts";
import { type UdpSocket, type UdpTarget, udpTarget } from "./quic/udp_socket.ts";
import type { FlowSession } from "./flow_session.ts";

export type { FlowSession } from "./flow_session.ts";

/** An authenticated, usable connection to a relay. */
export interface RelaySession extends FlowSession {
  /** The socket of the connection: channel packets to the relay share it. */
  readonly socket: UdpSocket;
  /** The relay's resolved address, where channel packets go. */
  readonly target: UdpTarget;
  /**
   * Leaves this relay for the next one of the list at once, without the backoff a failure
   * costs (e.g. it stopped answering path keepalives). `reason` is the close phrase.
   */
  moveOn(reason: string): void;
}

/** What a link tells its owner. Callbacks for one session never overlap another's. */
export interface RelayLinkHandlers {
  /** The relay answered `hello`: the session is usable (register / open now). */
  onUp(session: RelaySession): void;
  /** A control message other than hello/ping/pong. */
  onMessage(session: RelaySession, message: ControlMessage): void;
  /** A DATAGRAM frame from the relay (valid only during the call). */
  onDatagram(session: RelaySession, frame: Uint8Array): void;
  /** A stream other than the control stream became readable. */
  onStreamReadable?(session: RelaySession, streamId: number): void;
  /** A stream other than the control stream has capacity again. */
  onStreamWritable?(session: RelaySession, streamId: number): void;
  /** The session ended (after `onUp`), for any reason. */
  onDown(session: RelaySession, reason: string): void;
  /** A channel packet from the relay (valid only during the call), once the session is up. */
  onChannelPacket?(session: RelaySession, packet: Uint8Array): void;
}

/** Options for {@linkcode runRelayLink}. */
export interface RelayLinkOptions {
  /**
   * Relays as configured (host may be a DNS name). The link holds one session at a time
   * and moves to the next relay of the list after a failure or a `draining` notice.
   */
  relays: HostPort[];
  /** Name verified on the relay certificate. */
  serverName: string;
  /** Our role in `hello`. */
  role: "connector" | "agent";
  /** Token sent in `hello` (relay `auth` `token` or `mtls+token`); never logged. */
  token?: string;
  /** A connector's process instance, sent in `hello` (docs/PROTOCOL.md §7). */
  instance?: string;
  /** Current TLS material; read at every dial so a reload takes effect on reconnect. */
  tls: () => TlsMaterial;
  /** Idle timeout; keepalive pings go out at a third of it. */
  idleTimeoutMs: number;
  /** Gives up a dial that has not produced a `hello` answer in this time. */
  handshakeTimeoutMs?: number;
  /** Stops the link: the current session is closed and no redial happens. */
  signal: AbortSignal;
  logger: Logger;
  handlers: RelayLinkHandlers;
  /** Reconnect policy (exponential, full jitter). */
  backoff?: Backoff;
  /** Counts each redial after the first connection attempt. */
  onReconnect?: () => void;
  /** Told about exceptions from the connection's handlers (each closes the connection). */
  onHandlerError?: HandlerErrorReporter;
}

/**
 * Keeps a session to one relay up until `signal` aborts. Resolves after the final session
 * has closed.
 */
export async function runRelayLink(options: RelayLinkOptions): Promise<void> {
  const { relays, signal, logger } = options;
  const backoff = options.backoff ?? createBackoff();
  let attempt = 0;
  while (!signal.aborted) {
    const relay = relays[attempt % relays.length];
    const label = formatHostPort(relay);
    if (attempt++ > 0) options.onReconnect?.();
    let host: string;
    try {
      host = await resolveHost(relay.host);
    } catch (error) {
      logger.warn("relay unreachable", { relay: label, error });
      if (!await sleep(backoff.next(), signal)) break;
      continue;
    }
    const outcome = await runSession(options, { host, port: relay.port }, label, backoff);
    if (signal.aborted) break;
    // A draining relay asked us to go elsewhere now; other failures wait out the backoff
    // (with several relays the next attempt already goes to another one). A drain is a
    // planned stop of a healthy relay, not a failure streak, so the backoff starts over.
    // A move we decided on (a dead path) goes to the next relay at once, too.
    if (outcome === "draining") backoff.reset();
    const delay = outcome === "draining" || outcome === "moved" ? 0 : backoff.next();
    logger.info("relay link down, redialing", { relay: label, reason: outcome, delay_ms: delay });
    if (!await sleep(delay, signal)) break;
  }
}

/** Runs one connection; resolves with why it ended. */
function runSession(
  options: RelayLinkOptions,
  address: HostPort,
  label: string,
  backoff: Backoff,
): Promise<string> {
  const { signal, logger, handlers, idleTimeoutMs, handshakeTimeoutMs = 10_000 } = options;
  return new Promise((resolve) => {
    let conn: QuicClientConnection;
    try {
      conn = connectQuic({
        server: address,
        serverName: options.serverName,
        tls: options.tls(),
        idleTimeoutMs,
        onHandlerError: options.onHandlerError,
        onChannelPacket(packet) {
          if (up) conn.guard("channel packet", () => handlers.onChannelPacket?.(session, packet));
        },
      });
    } catch (error) {
      resolve(`dial failed: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    const log = logger.child({ relay: label, conn: conn.id });
    let up = false;
    let endReason = "closed";
    let pingSeq = 0;
    const session: RelaySession = {
      relay: label,
      conn,
      socket: conn.socket,
      target: udpTarget(address.host, address.port),
      send: (message) => channel.send(message),
      moveOn(reason) {
        endReason = "moved";
        conn.close(CloseCode.GOING_AWAY, reason);
      },
    };
    const handshakeTimer = setTimeout(() => {
      endReason = "handshake timeout";
      conn.close(CloseCode.GOING_AWAY, "handshake timeout");
    }, handshakeTimeoutMs);
    let keepalive: ReturnType<typeof setInterval> | undefined;
    const onAbort = () => {
      conn.close(CloseCode.NO_ERROR, "shutdown");
      // Shutdown does not wait for a dial that never came up: a half-done handshake can sit
      // in quiche's closing state for three PTOs (seconds before the first RTT sample).
      if (!up) resolve("shutdown");
    };
    signal.addEventListener("abort", onAbort, { once: true });

    const channel: ControlChannel = createControlChannel(conn, {
      onMessage(message) {
        if (!up) {
          if (message.type === "error") {
            // E.g. a relay of another protocol version: say why, in its words.
            endReason = `relay refused us: ${message.code}: ${message.message}`;
            log.error("relay refused the connection", {
              code: message.code,
              detail: message.message,
            });
            return;
          }
          if (
            message.type === "hello" && message.role === "relay" && message.v !== PROTOCOL_VERSION
          ) {
            endReason = `relay speaks protocol v${message.v}, we speak v${PROTOCOL_VERSION}`;
            log.error("relay speaks another protocol version", {
              relay_version: message.v,
              our_version: PROTOCOL_VERSION,
            });
            conn.close(CloseCode.PROTOCOL_VIOLATION, "unsupported_version");
            return;
          }
          if (message.type !== "hello" || message.role !== "relay") {
            endReason = `unexpected ${message.type} before hello`;
            conn.close(CloseCode.PROTOCOL_VIOLATION, endReason);
            return;
          }
          up = true;
          clearTimeout(handshakeTimer);
          backoff.connected();
          log.info("relay link up", { identity: message.identity });
          keepalive = setInterval(
            () => channel.send({ type: "ping", seq: ++pingSeq }),
            Math.max(1000, Math.floor(idleTimeoutMs / 3)),
          );
          handlers.onUp(session);
          return;
        }
        switch (message.type) {
          case "ping":
            channel.send({ type: "pong", seq: message.seq });
            return;
          case "pong":
            return;
          case "draining":
            endReason = "draining";
            log.info("relay is draining", { reconnect_ms: message.reconnect_ms });
            handlers.onMessage(session, message);
            // With another relay to go to, leave now so traffic moves at once. A link bound
            // to this one relay (a connector's, one per relay) keeps the session: its flows
            // get the relay's drain period, and the relay closes it.
            if (options.relays.length > 1) conn.close(CloseCode.NO_ERROR, "relay draining");
            return;
          case "error":
            log.warn("relay reported an error", { code: message.code, detail: message.message });
            return;
          default:
            handlers.onMessage(session, message);
        }
      },
      onProtocolError(reason, detail) {
        endReason = `protocol error: ${reason}`;
        log.warn("relay sent an invalid control frame", { reason, detail });
        conn.close(CloseCode.PROTOCOL_VIOLATION, reason);
      },
    });

    conn.setHandlers({
      onEstablished() {
        channel.send({
          type: "hello",
          v: PROTOCOL_VERSION,
          role: options.role,
          ...(options.token === undefined ? {} : { token: options.token }),
          ...(options.instance === undefined ? {} : { instance: options.instance }),
        });
      },
      onDatagram(frame) {
        if (up) handlers.onDatagram(session, frame);
      },
      onStreamReadable(streamId) {
        if (streamId === CONTROL_STREAM_ID) channel.readable();
        else if (up) handlers.onStreamReadable?.(session, streamId);
      },
      onStreamWritable(streamId) {
        if (streamId === CONTROL_STREAM_ID) channel.writable();
        else if (up) handlers.onStreamWritable?.(session, streamId);
      },
      onClosed(info: CloseInfo) {
        clearTimeout(handshakeTimer);
        clearInterval(keepalive);
        signal.removeEventListener("abort", onAbort);
        // A relay that said `draining` and then closed ended the session by draining.
        const closed = describeClose(info, endReason);
        const reason = (endReason === "draining" || endReason === "moved") && closed !== endReason
          ? `${endReason} (${closed})`
          : closed;
        if (up) handlers.onDown(session, reason);
        else if (!signal.aborted) log.warn("relay connection failed", { reason });
        resolve(endReason === "draining" || endReason === "moved" ? endReason : reason);
      },
    });
  });
}
