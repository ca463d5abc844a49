/**
 * End-to-end sessions: a QUIC connection between an agent (client) and a connector (server)
 * whose packets ride channel packets through relays (`path_socket.ts`). Both ends verify the
 * other's certificate against the deployment CA and check that it names the identity the
 * relay announced; the relay holds no key for either, so it can neither read nor forge the
 * traffic.
 *
 * Each session keeps its current path alive with pings to the relay every 500 ms; a path
 * that has not answered for {@linkcode PATH_DEAD_MS} is reported dead, and the owner moves
 * the session to another relay's channel with {@linkcode E2eSession.setPath}. A packet
 * that authenticates on another path (the peer moved first) moves the session there.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { identityFromCertificate } from "../identity/peer_identity.ts";
import {
  CHANNEL_HEADER_BYTES,
  ChannelPacketType,
  KEEPALIVE_NONCE_BYTES,
  writeChannelHeader,
} from "../protocol/channel_packet.ts";
import {
  CloseCode,
  type ConnectionHandlers,
  createConnectionState,
  type HandlerErrorReporter,
  type QuicConnection,
  receivePacket,
} from "./connection.ts";
import { CONN_ID_LEN, type NativeConnection, quiche } from "./native.ts";
import {
  createPathSocket,
  SESSION_CLIENT_ADDRESS,
  SESSION_SERVER_ADDRESS,
  type SessionPath,
} from "./path_socket.ts";
import { createQuicConfig, type TlsMaterial, type TransportOptions } from "./tls_config.ts";
import { udpChoice } from "./udp_socket.ts";

export type { SessionPath } from "./path_socket.ts";

/** Interval of path keepalive pings: 2 small packets a second per session and relay. */
export const PATH_PING_INTERVAL_MS = 500;
/**
 * A path whose relay has not answered a ping for this long is dead: four pings in a row
 * lost, so 5% loss on a path does not flap it (0.05⁴), and a dead relay is left within
 * 2.5 s.
 */
export const PATH_DEAD_MS = 2000;
/**
 * Largest end-to-end QUIC packet: a channel packet (header included) stays within the
 * 1350 bytes our relay connections use, under common internet path MTUs.
 */
export const SESSION_MAX_UDP_PAYLOAD = 1350 - CHANNEL_HEADER_BYTES;

/** Why a path changed. */
export type PathSwitchCause = "dead" | "draining" | "peer_moved" | "relay_closed" | "opened";

/** Options shared by both ends. */
export interface E2eSessionOptions extends TransportOptions {
  /** Our certificate and key, and the CA the peer's must chain to. */
  tls: TlsMaterial;
  /** The identity (certificate CN) the relay announced for the peer. */
  expectedPeer: string;
  /** The first path. */
  path: SessionPath;
  /** The application's handlers for the end-to-end connection. */
  handlers: ConnectionHandlers;
  /**
   * The peer completed the handshake with a certificate that does not name `expectedPeer`
   * (`presented` is the name it carries, or null): the session is being closed FORBIDDEN.
   */
  onIdentityMismatch?: (presented: string | null) => void;
  /** The current path stopped answering keepalives. */
  onPathDead?: (path: SessionPath) => void;
  /** The session moved to another path. */
  onPathSwitch?: (from: SessionPath | null, to: SessionPath, cause: PathSwitchCause) => void;
  /** Told about exceptions from the handlers (each closes the session). */
  onHandlerError?: HandlerErrorReporter;
}

/** One end of an end-to-end session. */
export interface E2eSession {
  /** The end-to-end QUIC connection. */
  readonly conn: QuicConnection;
  /** The path packets go to now (null after `setPath(null)`). */
  readonly path: SessionPath | null;
  /** Moves the session's packets to `path`. */
  setPath(path: SessionPath | null, cause: PathSwitchCause): void;
  /**
   * Feeds a channel packet of type DATA (header included) that arrived on `path`. Returns
   * false when quiche rejected it (not authentic, or not for this connection).
   */
  receive(packet: Uint8Array, path: SessionPath): boolean;
  /** Feeds a PONG (header included) that arrived on `path`. */
  pong(packet: Uint8Array, path: SessionPath): void;
}

/**
 * Starts the agent's end: a QUIC handshake over `options.path` with the connector the relay
 * named. The handshake's outcome reaches `options.handlers`.
 *
 * @example
 * ```ts ignore
 * const session = openE2eSession({ tls, expectedPeer: "connector-1", path, handlers });
 * ```
 */
export function openE2eSession(options: E2eSessionOptions): E2eSession {
  const config = createQuicConfig(options.tls, {
    ...options,
    maxUdpPayload: SESSION_MAX_UDP_PAYLOAD,
  });
  const native = quiche.Connection.connect(
    null,
    randomBytes(CONN_ID_LEN),
    toHostPort(SESSION_CLIENT_ADDRESS),
    toHostPort(SESSION_SERVER_ADDRESS),
    config,
  );
  return startSession(native, SESSION_SERVER_ADDRESS, options, true);
}

/**
 * Starts the connector's end for a channel whose first packet is `initial` (a DATA channel
 * packet, header included), or returns null when that packet is not a QUIC Initial one can
 * accept: a session only ever starts from the client's first flight.
 */
export function acceptE2eSession(
  initial: Uint8Array,
  options: E2eSessionOptions,
): E2eSession | null {
  const packet = initial.subarray(CHANNEL_HEADER_BYTES);
  if (packet.length < quiche.MIN_CLIENT_INITIAL_LEN) return null;
  try {
    if (quiche.Header.fromSlice(packet, CONN_ID_LEN).ty !== quiche.Type.Initial) return null;
  } catch {
    return null;
  }
  const config = createQuicConfig(options.tls, {
    ...options,
    maxUdpPayload: SESSION_MAX_UDP_PAYLOAD,
    verifyPeer: true,
  });
  const native = quiche.Connection.accept(
    randomBytes(CONN_ID_LEN),
    null,
    toHostPort(SESSION_SERVER_ADDRESS),
    toHostPort(SESSION_CLIENT_ADDRESS),
    config,
  );
  const session = startSession(native, SESSION_CLIENT_ADDRESS, options, false);
  session.receive(initial, options.path);
  return session;
}

function toHostPort(addr: Deno.NetAddr) {
  return { host: addr.hostname, port: addr.port };
}

function startSession(
  native: NativeConnection,
  peer: Deno.NetAddr,
  options: E2eSessionOptions,
  client: boolean,
): E2eSession {
  const socket = createPathSocket(udpChoice().kind, 2048);
  socket.path = options.path;
  let lastPong = performance.now();
  let nonce = 0n;
  const ping = new Uint8Array(CHANNEL_HEADER_BYTES + KEEPALIVE_NONCE_BYTES);
  const pingView = new DataView(ping.buffer);
  let reportedDead: SessionPath | null = null;
  const keepalive = setInterval(() => {
    const path = socket.path;
    if (path === null || state.finished) return;
    if (performance.now() - lastPong > PATH_DEAD_MS && reportedDead !== path) {
      reportedDead = path;
      state.api.guard("path dead", () => options.onPathDead?.(path));
    }
    writeChannelHeader(ping, ChannelPacketType.PING, path.channel);
    pingView.setBigUint64(CHANNEL_HEADER_BYTES, ++nonce);
    path.socket.send(ping, path.target);
  }, PATH_PING_INTERVAL_MS);
  const local = client ? SESSION_CLIENT_ADDRESS : SESSION_SERVER_ADDRESS;
  const state = createConnectionState(
    native,
    toHostPort(local),
    toHostPort(peer),
    socket,
    () => clearInterval(keepalive),
    options.onHandlerError,
  );
  const { handlers } = options;
  state.api.setHandlers({
    ...handlers,
    onEstablished() {
      const presented = identityFromCertificate(state.api.peerCertificate());
      if (presented !== options.expectedPeer) {
        options.onIdentityMismatch?.(presented);
        state.api.close(CloseCode.FORBIDDEN, "peer identity is not the one the relay announced");
        return;
      }
      handlers.onEstablished?.();
    },
  });

  /** Paths in the order this end first saw them: a later one is a newer one. */
  const seen = new WeakMap<SessionPath, number>();
  let seenCount = 0;
  const rank = (path: SessionPath | null): number => {
    if (path === null) return -1;
    let order = seen.get(path);
    if (order === undefined) seen.set(path, order = seenCount++);
    return order;
  };
  rank(options.path);

  function setPath(path: SessionPath | null, cause: PathSwitchCause): void {
    const from = socket.path;
    rank(path);
    if (from === path) return;
    socket.path = path;
    lastPong = performance.now();
    reportedDead = null;
    if (path !== null) {
      options.onPathSwitch?.(from, path, cause);
      // Whatever is in flight or owed goes out on the new path now, not at the next timer.
      state.flushNow();
    }
  }

  const session: E2eSession = {
    conn: state.api,
    get path() {
      return socket.path;
    },
    setPath,
    receive(packet, path) {
      const accepted = receivePacket(state, packet.subarray(CHANNEL_HEADER_BYTES), peer);
      // Only an authentic packet may move us (anyone can send a relay bytes for a channel),
      // and only forward: packets still in flight on the path we left must not pull us back.
      if (accepted && path !== socket.path && rank(path) > rank(socket.path)) {
        state.api.guard("path switch", () => setPath(path, "peer_moved"));
      }
      return accepted;
    },
    pong(_packet, path) {
      if (path === socket.path) lastPong = performance.now();
    },
  };
  if (client) queueMicrotask(state.flushNow);
  return session;
}
