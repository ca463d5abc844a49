/**
 * Builds quiche configurations for ztna-edge endpoints.
 *
 * @module
 */
import { ALPN, type NativeConfig, quiche } from "./native.ts";
import { udpChoice, type UdpSocketKind } from "./udp_socket.ts";

/** PEM material for one endpoint: its own certificate chain and key, and the CA it trusts. */
export interface TlsMaterial {
  /**
   * PEM certificate (chain) this endpoint presents; a client authenticating by token only
   * presents none.
   */
  cert?: Uint8Array;
  /** PEM private key for `cert`. */
  key?: Uint8Array;
  /** PEM CA certificate(s) used to verify the peer. */
  ca: Uint8Array;
}

/**
 * Flow-control window of one stream: the most a peer can make us hold for one flow (a
 * relay whose far side is slow keeps that much unread in quiche).
 */
export const STREAM_WINDOW = 1024 * 1024;

/** Transport settings shared by servers and clients. */
export interface TransportOptions {
  /**
   * Close a connection after this long without any packet from the peer.
   * @default {30000}
   */
  idleTimeoutMs?: number;
  /**
   * Largest UDP payload we send; 1350 stays under common internet path MTUs.
   * @default {1350}
   */
  maxUdpPayload?: number;
  /**
   * Largest UDP payload we accept, advertised to the peer (max_udp_payload_size); the
   * peer's packets, and so its DATAGRAM frames to us, stay within it.
   * @default {65527}
   */
  maxRecvUdpPayload?: number;
  /**
   * DATAGRAM frames queued per direction before new ones are refused: deep enough to carry a
   * connector's or agent's bursts while the congestion window opens (at 20k/s offered, 4% were
   * refused with 1024, 2% with 4096); the relay passes its `limits.datagram_queue`.
   * @default {4096}
   */
  datagramQueue?: number;
  /**
   * Server only: require and verify a client certificate (mTLS). Off when peers authenticate
   * with tokens alone; the client always verifies the server.
   * @default {true}
   */
  verifyPeer?: boolean;
  /**
   * Bidirectional streams the peer may open (control stream plus TCP flows).
   * @default {1024}
   */
  maxStreams?: number;
  /**
   * Offer QUIC DATAGRAM frames (RFC 9221). Only tests of peers without them turn it off.
   * @default {true}
   */
  datagrams?: boolean;
}

/** Network paths (peer addresses) quiche tracks per connection; see `createQuicConfig`. */
export const MAX_PATHS = 32;

/** The send-side UDP payload limit used when none is configured. */
export const DEFAULT_MAX_UDP_PAYLOAD = 1350;

/**
 * Size of the pooled send buffers for an endpoint whose packets are at most `maxUdpPayload`
 * bytes: quiche leaves a DATAGRAM queued for good when no packet buffer can hold it.
 */
export function sendBufferBytesFor(maxUdpPayload = DEFAULT_MAX_UDP_PAYLOAD): number {
  return Math.max(2048, maxUdpPayload);
}

/**
 * Creates a quiche config that requires and verifies the peer's certificate against `tls.ca`
 * (mutual TLS on the server; server authentication on the client).
 *
 * @example
 * ```ts ignore
 * const config = createQuicConfig(material, { idleTimeoutMs: 10_000 });
 * ```
 */
export function createQuicConfig(tls: TlsMaterial, options: TransportOptions = {}): NativeConfig {
  const {
    idleTimeoutMs = 30_000,
    maxUdpPayload = DEFAULT_MAX_UDP_PAYLOAD,
    maxRecvUdpPayload = 65_527,
    datagramQueue = 4096,
    maxStreams = 1024,
    verifyPeer = true,
    datagrams = true,
  } = options;
  if (!Number.isInteger(idleTimeoutMs) || idleTimeoutMs < 1) {
    throw new RangeError(
      `Cannot create QUIC config as 'idleTimeoutMs' must be a positive integer: current value is ${idleTimeoutMs}`,
    );
  }
  // quiche's binding panics on empty lists: a certificate-less client passes null.
  const config = quiche.Config.withBoringSslCtx(
    verifyPeer,
    false,
    tls.ca,
    tls.key ? [tls.key] : null,
    tls.cert ? [tls.cert] : null,
    null,
  );
  config.setApplicationProtos([ALPN]);
  config.setMaxIdleTimeout(idleTimeoutMs);
  config.setMaxRecvUdpPayloadSize(maxRecvUdpPayload);
  config.setMaxSendUdpPayloadSize(maxUdpPayload);
  // quiche 0.18 does not resend a lost MAX_DATA unless the application has read more since:
  // a sender blocked on connection credit whose last MAX_DATA was lost waits forever (seen
  // with 200 busy flows and receive-buffer drops). The connection window is therefore twice
  // what all open streams can have unread or in flight (quiche re-grants at half a window),
  // so only stream windows ever block a sender, and their MAX_STREAM_DATA is resent when
  // lost. What one connection can make us hold is bounded by its open streams instead: the
  // relay's `limits.flows_per_connection` times STREAM_WINDOW.
  const connectionWindow = 2 * maxStreams * STREAM_WINDOW;
  config.setInitialMaxData(connectionWindow);
  config.setInitialMaxStreamDataBidiLocal(STREAM_WINDOW);
  config.setInitialMaxStreamDataBidiRemote(STREAM_WINDOW);
  config.setInitialMaxStreamDataUni(0);
  config.setInitialMaxStreamsBidi(maxStreams);
  config.setInitialMaxStreamsUni(0);
  config.setMaxStreamWindow(STREAM_WINDOW);
  config.setMaxConnectionWindow(connectionWindow);
  // Peers do not migrate on purpose, but a NAT may rebind their address, and RFC 9000 §9
  // wants that followed even so: quiche validates the new path and moves to it (the send
  // path follows `SendInfo.to`). Without spare connection ids quiche keeps every old path
  // and tracks at most this many per connection, so a connection survives 31 rebindings;
  // one beyond is stuck until the idle timeout, and the peer reconnects.
  config.setDisableActiveMigration(true);
  config.setActiveConnectionIdLimit(MAX_PATHS);
  config.enableDgram(datagrams, datagramQueue, datagramQueue);
  config.enablePacing(false);
  config.setCcAlgorithmName(congestionControlFor(udpChoice().kind));
  return config;
}

/**
 * The congestion controller for connections on `kind` of socket. A datagram tunnel on the
 * portable socket sees losses from its full 212 KiB receive buffers, not from a congested
 * path, and CUBIC halved its window on each one until the DATAGRAM queue overflowed (1200 B
 * one way, 15k/s offered: 28% lost with CUBIC, 1.5% with BBR): there BBR. The batched socket's
 * buffers do not overflow in bursts, and there CUBIC grows its window to the offered rate
 * where BBR (unpaced) held the queue full: 4,989/s at ≤ 1% loss with BBR, 14,974/s with
 * CUBIC (`bench:udp --only=1200:oneway --socket=batched`, docs/BENCHMARKS.md).
 */
export function congestionControlFor(kind: UdpSocketKind): "bbr" | "cubic" {
  return kind === "batched" ? "cubic" : "bbr";
}
