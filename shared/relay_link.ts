/**
 * A connector's or agent's link to one relay: dial, authenticate (mTLS plus `hello`),
 * keep alive, and redial with backoff until shutdown.
 *
 * @module
 */
import { type Backoff, createBackoff, sleep } from "./backoff.ts";
import { CONTROL_STREAM_ID, type ControlChannel, createControlChannel } from "./control_channel.ts";
import type { Logger } from "./log.ts";
import { type ControlMessage, PROTOCOL_VERSION } from "./protocol/control.ts";
import {
  type CloseInfo,
  CloseCode,
  connectQuic,
  type HostPort,
  type QuicConnection,
  type TlsMaterial,
} from "./quic/mod.ts";

/** An authenticated, usable connection to a relay. */
export interface RelaySession {
  /** The relay's address as configured (`host:port`). */
  readonly relay: string;
  /** The QUIC connection. */
  readonly conn: QuicConnection;
  /** Sends a control message; false when the channel is gone. */
  send(message: ControlMessage): boolean;
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
}

/** Options for {@linkcode runRelayLink}. */
export interface RelayLinkOptions {
  /** The relay as configured (`host:port`, host may be a DNS name). */
  relay: HostPort;
  /** Name verified on the relay certificate. */
  serverName: string;
  /** Our role in `hello`. */
  role: "connector" | "agent";
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
}

/** Resolves a configured host to the IP literal a UDP socket and quiche need. */
export async function resolveHost(host: string): Promise<string> {
  if (/^[\d.]+$/.test(host) || host.includes(":")) return host;
  if (host === "localhost") return "127.0.0.1";
  const addresses = await Deno.resolveDns(host, "A").catch(() => [] as string[]);
  if (addresses.length > 0) return addresses[0];
  const v6 = await Deno.resolveDns(host, "AAAA").catch(() => [] as string[]);
  if (v6.length > 0) return v6[0];
  throw new Error(`cannot resolve relay host ${host}`);
}

/**
 * Keeps a session to one relay up until `signal` aborts. Resolves after the final session
 * has closed.
 */
export async function runRelayLink(options: RelayLinkOptions): Promise<void> {
  const { relay, signal, logger, handlers } = options;
  const backoff = options.backoff ?? createBackoff();
  const label = `${relay.host}:${relay.port}`;
  let attempt = 0;
  while (!signal.aborted) {
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
    const delay = outcome === "draining" ? 0 : backoff.next();
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
    let conn: QuicConnection;
    try {
      conn = connectQuic({
        server: address,
        serverName: options.serverName,
        tls: options.tls(),
        idleTimeoutMs,
      });
    } catch (error) {
      resolve(`dial failed: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    const log = logger.child({ relay: label, conn: conn.id });
    let up = false;
    let endReason = "closed";
    let pingSeq = 0;
    let channel: ControlChannel;
    const session: RelaySession = {
      relay: label,
      conn,
      send: (message) => channel.send(message),
    };
    const handshakeTimer = setTimeout(() => {
      endReason = "handshake timeout";
      conn.close(CloseCode.GOING_AWAY, "handshake timeout");
    }, handshakeTimeoutMs);
    let keepalive: ReturnType<typeof setInterval> | undefined;
    const onAbort = () => conn.close(CloseCode.NO_ERROR, "shutdown");
    signal.addEventListener("abort", onAbort, { once: true });

    channel = createControlChannel(conn, {
      onMessage(message) {
        if (!up) {
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
        channel.send({ type: "hello", v: PROTOCOL_VERSION, role: options.role });
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
        const reason = describeClose(info, endReason);
        if (up) handlers.onDown(session, reason);
        else if (!signal.aborted) log.warn("relay connection failed", { reason });
        resolve(endReason === "draining" ? "draining" : reason);
      },
    });
  });
}

/** A one-line explanation of a close, for logs and `onDown`. */
export function describeClose(info: CloseInfo, fallback: string): string {
  if (info.timedOut) return "idle timeout";
  const error = info.peer ?? info.local;
  if (error === null) return fallback;
  const side = info.peer ? "relay" : "local";
  if (!error.isApp && error.code >= 0x100 && error.code < 0x200) {
    return `${side} TLS alert ${error.code - 0x100}${tlsAlertName(error.code - 0x100)}`;
  }
  return `${side} closed: code ${error.code}${error.reason ? ` (${error.reason})` : ""}`;
}

function tlsAlertName(alert: number): string {
  const names: Record<number, string> = {
    42: " bad_certificate",
    45: " certificate_expired",
    46: " certificate_unknown",
    48: " unknown_ca",
    116: " certificate_required",
  };
  return names[alert] ?? "";
}
