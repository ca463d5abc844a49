/**
 * The QUIC server endpoint: one UDP socket, connections routed by Destination Connection ID.
 *
 * The loop, as in quiche's `server.rs`: read a packet, parse its header, find the
 * connection (or validate the client's address with a Retry and accept a new one),
 * `recv`, dispatch events, then drain `send()` and re-arm the timer.
 *
 * A connection is *pre-auth* from its accept until the application calls
 * {@linkcode QuicServer.authenticated}: handshaking, or established but not yet
 * authenticated by the application protocol. Pre-auth connections cost state while their
 * peer has proven nothing but its address, so they are bounded per source address and in
 * total, and each one gets one deadline for handshake and authentication together.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import {
  CloseCode,
  type ConnectionState,
  createConnectionState,
  type HandlerErrorReporter,
  type QuicConnection,
  receivePacket,
} from "./connection.ts";
import { INVALID_TOKEN, writeInitialClose } from "./initial_close.ts";
import { CONN_ID_LEN, type HostPort, type PacketHeader, quiche } from "./native.ts";
import { createRetryTokens } from "./retry_token.ts";
import {
  createQuicConfig,
  sendBufferBytesFor,
  type TlsMaterial,
  type TransportOptions,
} from "./tls_config.ts";
import { createTokenBucket } from "../token_bucket.ts";
import { openUdpSocket, type UdpSocket, udpTarget } from "./udp_socket.ts";

/** Why the server dropped a packet without feeding it to a connection. */
export type PacketDropReason =
  | "malformed_header"
  | "unsupported_version"
  | "unknown_connection"
  | "short_initial"
  | "bad_token"
  | "connection_limit"
  | "preauth_limit"
  | "rejected_by_quic"
  | "not_accepting"
  | "rate_limited";

/** Server-side counters (the component exports them as metrics). */
export interface ServerCounters {
  /** Packets dropped before reaching a connection, by reason. */
  drops: Record<PacketDropReason, number>;
  /** Retry packets sent (address validation). */
  retries: number;
  /** Version negotiation packets sent. */
  versionNegotiations: number;
  /** Initials with an invalid or expired token answered with INVALID_TOKEN. */
  invalidTokenCloses: number;
  /** Connections accepted (handshake begun). */
  accepted: number;
  /** Pre-auth connections closed because their deadline passed. */
  preauthTimeouts: number;
  /** Pre-auth connections closed, oldest first, to make room under `maxPreauth`. */
  preauthEvictions: number;
}

/** Live pre-auth connections by stage. */
export interface PreauthCounts {
  /** QUIC/TLS handshake not complete yet. */
  handshake: number;
  /** Handshake complete, not yet authenticated by the application (`hello`). */
  hello: number;
}

/** Options for {@linkcode startQuicServer}. */
export interface QuicServerOptions extends TransportOptions {
  /** Local address to bind (IP literal). */
  host: string;
  /** Local UDP port; 0 picks an ephemeral one. */
  port: number;
  /** Server certificate, key and the CA client certificates must chain to. */
  tls: TlsMaterial;
  /**
   * Require a stateless Retry round trip before accepting (address validation).
   * @default {true}
   */
  retry?: boolean;
  /**
   * Maximum simultaneous connections; Initials beyond it are dropped.
   * @default {10000}
   */
  maxConnections?: number;
  /**
   * Time from accept until the application must have called
   * {@linkcode QuicServer.authenticated}; a connection that has not is closed with
   * {@linkcode CloseCode.LIMIT} (`authentication_timeout`) and counted.
   * @default {10000}
   */
  preauthTimeoutMs?: number;
  /**
   * Pre-auth connections one source address may hold; its further new connections are
   * dropped (`preauth_limit`) until one authenticates or ends.
   * @default {64}
   */
  maxPreauthPerIp?: number;
  /**
   * Pre-auth connections in total. A new connection beyond it closes the oldest pre-auth
   * one (counted as an eviction), so the budget cannot be held against newcomers.
   * @default {2000}
   */
  maxPreauth?: number;
  /**
   * Called for a new client whose address is validated, before any connection state is
   * created; return false to refuse it (e.g. a per-source handshake rate limit).
   */
  admit?: (peer: HostPort) => boolean;
  /** A new connection (handshake in progress): set its handlers here. */
  onConnection: (conn: QuicConnection) => void;
  /**
   * Receives every datagram whose QUIC fixed bit is clear: channel packets
   * (`shared/protocol/channel_packet.ts`), which share this socket. Without it they are
   * dropped as `malformed_header`. `packet` and `from` are only valid during the call.
   */
  onChannelPacket?: (packet: Uint8Array, from: Deno.NetAddr) => void;
  /** Told about exceptions from connection handlers (each closes its connection). */
  onHandlerError?: HandlerErrorReporter;
}

/** A running QUIC server. */
export interface QuicServer {
  /** The bound UDP address. */
  readonly addr: HostPort;
  /** The socket, for channel packets sent alongside the connections' own. */
  readonly socket: UdpSocket;
  /** Live connections. */
  readonly connections: ReadonlySet<QuicConnection>;
  /** Packet-level counters. */
  readonly counters: ServerCounters;
  /**
   * Declares `conn` authenticated: it leaves the pre-auth budget of its address and the
   * total, and its deadline no longer applies. Idempotent.
   */
  authenticated(conn: QuicConnection): void;
  /** Live pre-auth connections by stage (for a gauge). */
  preauth(): PreauthCounts;
  /** Replaces the TLS material for new connections (certificate rotation). */
  setTls(tls: TlsMaterial): void;
  /** Stops accepting new connections; existing ones continue. */
  stopAccepting(): void;
  /** Closes the socket at once (connections should have been closed first). */
  close(): void;
}

/** A connection between accept and {@linkcode QuicServer.authenticated}. */
interface Preauth {
  state: ConnectionState;
  /** The source address it was accepted from (what its budget is charged to). */
  host: string;
  /** `performance.now()` at which it is closed unless authenticated. */
  deadline: number;
}

/**
 * INVALID_TOKEN answers per second (burst as many). Each costs about 60 us of HMAC and AES
 * and goes to an address the token failed to validate, so it is budgeted: honest clients
 * need one only after a relay restart or a rebinding during their handshake.
 */
const INVALID_TOKEN_CLOSES_PER_SECOND = 100;

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Connection-id map key: runs for every packet, so a table lookup per byte. */
const hex = (bytes: Uint8Array, start = 0, end = bytes.length): string => {
  let out = "";
  for (let i = start; i < end; i++) out += HEX[bytes[i]];
  return out;
};

/**
 * Binds a UDP socket and serves QUIC connections on it.
 *
 * @example
 * ```ts ignore
 * const server = startQuicServer({ host: "127.0.0.1", port: 0, tls, onConnection(conn) {
 *   conn.setHandlers({
 *     onEstablished: () => server.authenticated(conn),
 *     onDatagram: (d) => conn.sendDatagram(d),
 *   });
 * } });
 * ```
 */
export function startQuicServer(options: QuicServerOptions): QuicServer {
  const {
    host,
    port,
    retry = true,
    maxConnections = 10_000,
    preauthTimeoutMs = 10_000,
    maxPreauthPerIp = 64,
    maxPreauth = 2000,
    admit = () => true,
    onConnection,
  } = options;
  for (const [name, value] of Object.entries({ preauthTimeoutMs, maxPreauthPerIp, maxPreauth })) {
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(
        `Cannot start QUIC server as '${name}' must be a positive integer: current value is ${value}`,
      );
    }
  }
  let config = createQuicConfig(options.tls, options);
  const tokens = createRetryTokens();
  const invalidTokenBudget = createTokenBucket({ perSecond: INVALID_TOKEN_CLOSES_PER_SECOND });
  const byId = new Map<string, ConnectionState>();
  const live = new Set<QuicConnection>();
  // Insertion order is accept order, hence deadline order: the sweep and eviction look at
  // the front only.
  const preauth = new Map<QuicConnection, Preauth>();
  const preauthByHost = new Map<string, number>();
  let sweepTimer: ReturnType<typeof setTimeout> | undefined;
  const counters: ServerCounters = {
    drops: {
      malformed_header: 0,
      unsupported_version: 0,
      unknown_connection: 0,
      short_initial: 0,
      bad_token: 0,
      connection_limit: 0,
      preauth_limit: 0,
      rejected_by_quic: 0,
      not_accepting: 0,
      rate_limited: 0,
    },
    retries: 0,
    versionNegotiations: 0,
    invalidTokenCloses: 0,
    accepted: 0,
    preauthTimeouts: 0,
    preauthEvictions: 0,
  };
  let accepting = true;
  const scratch = new Uint8Array(1500);

  const socket: UdpSocket = openUdpSocket({
    host,
    port,
    // quiche writes each packet into one pooled buffer: it must hold the largest we send.
    sendBufferBytes: sendBufferBytesFor(options.maxUdpPayload),
    onPacket: (packet, from) => handlePacket(packet, from),
  });
  const local: HostPort = { host: socket.addr.hostname, port: socket.addr.port };

  function handlePacket(packet: Uint8Array, from: Deno.NetAddr): void {
    // Channel packets never set the fixed bit that every QUIC packet sets (RFC 9000 §17).
    if (packet.length > 0 && (packet[0] & 0x40) === 0 && options.onChannelPacket) {
      options.onChannelPacket(packet, from);
      return;
    }
    // Short-header packets (first bit 0) are all traffic after the handshake; their DCID is
    // one of ours, the CONN_ID_LEN bytes after the first byte. Routing them needs no native
    // header parse (a call into the addon and three allocations per packet).
    if ((packet[0] & 0x80) === 0 && packet.length > CONN_ID_LEN) {
      const known = byId.get(hex(packet, 1, 1 + CONN_ID_LEN));
      if (known === undefined) counters.drops.unknown_connection++;
      else if (!receivePacket(known, packet, from)) counters.drops.rejected_by_quic++;
      return;
    }
    // A long header's version is at the same place in every QUIC version (RFC 8999), and
    // only the version says what the type bits mean: QUIC v2 calls its Initial 01, which
    // is v1's 0-RTT. An unknown version is answered before anything else is read.
    if ((packet[0] & 0x80) !== 0 && packet.length >= 5) {
      const version = new DataView(packet.buffer, packet.byteOffset).getUint32(1);
      if (version !== 0 && !quiche.versionIsSupported(version)) {
        negotiateVersion(packet, from);
        return;
      }
    }
    let header: PacketHeader;
    try {
      header = quiche.Header.fromSlice(packet, CONN_ID_LEN);
    } catch {
      counters.drops.malformed_header++;
      return;
    }
    const known = byId.get(hex(header.dcid));
    if (known !== undefined) {
      if (!receivePacket(known, packet, from)) counters.drops.rejected_by_quic++;
      return;
    }
    if (header.ty !== quiche.Type.Initial) {
      counters.drops.unknown_connection++;
      return;
    }
    // fromSlice "parses" random bytes too; check what it found before trusting it.
    if (header.dcid.length < 8 || header.dcid.length > 20 || header.scid.length > 20) {
      counters.drops.malformed_header++;
      return;
    }
    // Answering anything shorter than a padded Initial would amplify spoofed traffic.
    if (packet.length < quiche.MIN_CLIENT_INITIAL_LEN) {
      counters.drops.short_initial++;
      return;
    }
    if (!accepting) {
      counters.drops.not_accepting++;
      return;
    }
    if (live.size >= maxConnections) {
      counters.drops.connection_limit++;
      return;
    }
    let scid: Uint8Array;
    let odcid: Uint8Array | null = null;
    if (retry) {
      const token = header.token ?? new Uint8Array(0);
      if (token.length === 0) {
        const newScid = randomBytes(CONN_ID_LEN);
        const retryToken = tokens.mint(header.dcid, from.hostname, from.port);
        const length = quiche.retry(
          header.scid,
          header.dcid,
          newScid,
          retryToken,
          header.version,
          scratch,
        );
        socket.send(scratch.subarray(0, length), udpTarget(from.hostname, from.port));
        counters.retries++;
        return;
      }
      odcid = tokens.verify(token, from.hostname, from.port);
      if (odcid === null || header.dcid.length !== CONN_ID_LEN) {
        counters.drops.bad_token++;
        rejectToken(header, from);
        return;
      }
      scid = header.dcid;
    } else {
      scid = randomBytes(CONN_ID_LEN);
    }
    // Checked after Retry, like `admit`: only a validated address spends its own budget,
    // so a spoofer cannot exhaust someone else's. Checked before `admit`, so an address at
    // its cap spends no handshake tokens on retransmitted Initials.
    if ((preauthByHost.get(from.hostname) ?? 0) >= maxPreauthPerIp) {
      counters.drops.preauth_limit++;
      return;
    }
    const peer: HostPort = { host: from.hostname, port: from.port };
    if (!admit(peer)) {
      counters.drops.rate_limited++;
      return;
    }
    if (preauth.size >= maxPreauth) {
      counters.preauthEvictions++;
      shedPreauth(preauth.values().next().value!, "preauth_evicted");
    }
    const native = quiche.Connection.accept(scid, odcid, local, peer, config);
    const keys = [hex(scid)];
    // Without Retry the client keeps using its own DCID until it sees ours.
    if (!retry) keys.push(hex(header.dcid));
    const state = createConnectionState(native, local, peer, socket, () => {
      for (const key of keys) byId.delete(key);
      live.delete(state.api);
      endPreauth(state.api);
    }, options.onHandlerError);
    for (const key of keys) byId.set(key, state);
    live.add(state.api);
    startPreauth(state, peer.host);
    counters.accepted++;
    onConnection(state.api);
    if (!receivePacket(state, packet, from)) counters.drops.rejected_by_quic++;
  }

  /**
   * Answers a long-header packet of a version quiche does not speak with Version
   * Negotiation (RFC 9000 §6), reading only the version-independent fields.
   */
  function negotiateVersion(packet: Uint8Array, from: Deno.NetAddr): void {
    counters.drops.unsupported_version++;
    // Below the size of a client's first Initial, an answer could amplify spoofed traffic.
    if (packet.length < quiche.MIN_CLIENT_INITIAL_LEN) return;
    const dcidEnd = 6 + packet[5];
    const scidEnd = dcidEnd + 1 + packet[dcidEnd];
    if (scidEnd > packet.length) return;
    const length = quiche.negotiateVersion(
      packet.subarray(dcidEnd + 1, scidEnd),
      packet.subarray(6, dcidEnd),
      scratch,
    );
    socket.send(scratch.subarray(0, length), udpTarget(from.hostname, from.port));
    counters.versionNegotiations++;
  }

  /**
   * Closes, statelessly, an attempt whose token is invalid or expired, with INVALID_TOKEN
   * (RFC 9000 §8.1.3). A fresh Retry would not do: a client accepts one Retry per attempt,
   * and every token we issue comes from a Retry, so this client has already used its one.
   */
  function rejectToken(header: PacketHeader, from: Deno.NetAddr): void {
    if (!invalidTokenBudget()) return;
    const length = writeInitialClose(header.dcid, header.scid, INVALID_TOKEN, scratch);
    socket.send(scratch.subarray(0, length), udpTarget(from.hostname, from.port));
    counters.invalidTokenCloses++;
  }

  function startPreauth(state: ConnectionState, from: string): void {
    preauth.set(state.api, { state, host: from, deadline: performance.now() + preauthTimeoutMs });
    preauthByHost.set(from, (preauthByHost.get(from) ?? 0) + 1);
    sweepTimer ??= setTimeout(sweep, preauthTimeoutMs);
  }

  function endPreauth(conn: QuicConnection): void {
    const entry = preauth.get(conn);
    if (entry === undefined) return;
    preauth.delete(conn);
    const left = preauthByHost.get(entry.host)! - 1;
    if (left === 0) preauthByHost.delete(entry.host);
    else preauthByHost.set(entry.host, left);
  }

  /**
   * Closes a pre-auth connection and releases its budget at once: quiche still answers its
   * peer for the closing period, but it will never authenticate.
   */
  function shedPreauth(entry: Preauth, reason: string): void {
    endPreauth(entry.state.api);
    entry.state.api.close(CloseCode.LIMIT, reason);
  }

  /** Closes every pre-auth connection past its deadline; re-arms for the next one. */
  function sweep(): void {
    sweepTimer = undefined;
    const now = performance.now();
    for (const entry of preauth.values()) {
      if (entry.deadline > now) {
        sweepTimer = setTimeout(sweep, Math.ceil(entry.deadline - now));
        return;
      }
      const { native } = entry.state;
      // One that is already closing (either side) is not a timeout; it just leaves.
      if (native.localError() === null && !native.isDraining()) {
        counters.preauthTimeouts++;
        shedPreauth(entry, "authentication_timeout");
      } else {
        endPreauth(entry.state.api);
      }
    }
  }

  return {
    addr: local,
    socket,
    connections: live,
    counters,
    authenticated(conn) {
      endPreauth(conn);
    },
    preauth() {
      const counts: PreauthCounts = { handshake: 0, hello: 0 };
      for (const conn of preauth.keys()) {
        if (conn.established) counts.hello++;
        else counts.handshake++;
      }
      return counts;
    },
    setTls(tls) {
      config = createQuicConfig(tls, options);
    },
    stopAccepting() {
      accepting = false;
    },
    close() {
      clearTimeout(sweepTimer);
      sweepTimer = undefined;
      socket.close();
    },
  };
}
