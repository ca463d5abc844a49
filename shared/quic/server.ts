/**
 * The QUIC server endpoint: one UDP socket, connections routed by Destination Connection ID.
 *
 * The loop, as in quiche's `server.rs`: read a packet, parse its header, find the
 * connection (or validate the client's address with a Retry and accept a new one),
 * `recv`, dispatch events, then drain `send()` and re-arm the timer.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import {
  type ConnectionState,
  createConnectionState,
  type HandlerErrorReporter,
  type QuicConnection,
  receivePacket,
} from "./connection.ts";
import { CONN_ID_LEN, type HostPort, type PacketHeader, quiche } from "./native.ts";
import { createRetryTokens } from "./retry_token.ts";
import { createQuicConfig, type TlsMaterial, type TransportOptions } from "./tls_config.ts";
import { openUdpSocket, type UdpSocket, udpTarget } from "../udp_socket.ts";

/** Why the server dropped a packet without feeding it to a connection. */
export type PacketDropReason =
  | "malformed_header"
  | "unsupported_version"
  | "unknown_connection"
  | "short_initial"
  | "bad_token"
  | "connection_limit"
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
  /** Connections accepted (handshake begun). */
  accepted: number;
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
   * Called for a new client whose address is validated, before any connection state is
   * created; return false to refuse it (e.g. a per-source handshake rate limit).
   */
  admit?: (peer: HostPort) => boolean;
  /** A new connection (handshake in progress): set its handlers here. */
  onConnection: (conn: QuicConnection) => void;
  /** Told about exceptions from connection handlers (each closes its connection). */
  onHandlerError?: HandlerErrorReporter;
}

/** A running QUIC server. */
export interface QuicServer {
  /** The bound UDP address. */
  readonly addr: HostPort;
  /** Live connections. */
  readonly connections: ReadonlySet<QuicConnection>;
  /** Packet-level counters. */
  readonly counters: ServerCounters;
  /** Replaces the TLS material for new connections (certificate rotation). */
  setTls(tls: TlsMaterial): void;
  /** Stops accepting new connections; existing ones continue. */
  stopAccepting(): void;
  /** Closes the socket at once (connections should have been closed first). */
  close(): void;
}

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
 *   conn.setHandlers({ onDatagram: (d) => conn.sendDatagram(d) });
 * } });
 * ```
 */
export function startQuicServer(options: QuicServerOptions): QuicServer {
  const {
    host,
    port,
    retry = true,
    maxConnections = 10_000,
    admit = () => true,
    onConnection,
  } = options;
  let config = createQuicConfig(options.tls, options);
  const tokens = createRetryTokens();
  const byId = new Map<string, ConnectionState>();
  const live = new Set<QuicConnection>();
  const counters: ServerCounters = {
    drops: {
      malformed_header: 0,
      unsupported_version: 0,
      unknown_connection: 0,
      short_initial: 0,
      bad_token: 0,
      connection_limit: 0,
      rejected_by_quic: 0,
      not_accepting: 0,
      rate_limited: 0,
    },
    retries: 0,
    versionNegotiations: 0,
    accepted: 0,
  };
  let accepting = true;
  const scratch = new Uint8Array(1500);

  const socket: UdpSocket = openUdpSocket({
    host,
    port,
    onPacket: (packet, from) => handlePacket(packet, from),
  });
  const local: HostPort = { host: socket.addr.hostname, port: socket.addr.port };

  function handlePacket(packet: Uint8Array, from: Deno.NetAddr): void {
    // Short-header packets (first bit 0) are all traffic after the handshake; their DCID is
    // one of ours, the CONN_ID_LEN bytes after the first byte. Routing them needs no native
    // header parse (a call into the addon and three allocations per packet).
    if ((packet[0] & 0x80) === 0 && packet.length > CONN_ID_LEN) {
      const known = byId.get(hex(packet, 1, 1 + CONN_ID_LEN));
      if (known === undefined) counters.drops.unknown_connection++;
      else if (!receivePacket(known, packet, from)) counters.drops.rejected_by_quic++;
      return;
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
    if (!quiche.versionIsSupported(header.version)) {
      const length = quiche.negotiateVersion(header.scid, header.dcid, scratch);
      socket.send(scratch.subarray(0, length), udpTarget(from.hostname, from.port));
      counters.versionNegotiations++;
      // Answered with version negotiation, but for this endpoint the packet is dropped.
      counters.drops.unsupported_version++;
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
        return;
      }
      scid = header.dcid;
    } else {
      scid = randomBytes(CONN_ID_LEN);
    }
    const peer: HostPort = { host: from.hostname, port: from.port };
    // Checked after Retry: only a validated address spends its own handshake budget, so a
    // spoofer cannot exhaust someone else's.
    if (!admit(peer)) {
      counters.drops.rate_limited++;
      return;
    }
    const native = quiche.Connection.accept(scid, odcid, local, peer, config);
    const keys = [hex(scid)];
    // Without Retry the client keeps using its own DCID until it sees ours.
    if (!retry) keys.push(hex(header.dcid));
    const state = createConnectionState(native, local, peer, socket, () => {
      for (const key of keys) byId.delete(key);
      live.delete(state.api);
    }, options.onHandlerError);
    for (const key of keys) byId.set(key, state);
    live.add(state.api);
    counters.accepted++;
    onConnection(state.api);
    if (!receivePacket(state, packet, from)) counters.drops.rejected_by_quic++;
  }

  return {
    addr: local,
    connections: live,
    counters,
    setTls(tls) {
      config = createQuicConfig(tls, options);
    },
    stopAccepting() {
      accepting = false;
    },
    close() {
      socket.close();
    },
  };
}
