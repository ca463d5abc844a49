/**
 * The QUIC client endpoint: one bound UDP socket carrying one connection to a relay.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import {
  createConnectionState,
  type HandlerErrorReporter,
  type QuicConnection,
  receivePacket,
} from "./connection.ts";
import { CONN_ID_LEN, type HostPort, quiche } from "./native.ts";
import {
  createQuicConfig,
  sendBufferBytesFor,
  type TlsMaterial,
  type TransportOptions,
} from "./tls_config.ts";
import { openUdpSocket, type UdpSocket } from "./udp_socket.ts";

/** Options for {@linkcode connectQuic}. */
export interface QuicClientOptions extends TransportOptions {
  /** The server's address (IP literal and port). */
  server: HostPort;
  /** Name the server certificate must carry (SNI and verification). */
  serverName: string;
  /** Client certificate, key and the CA the server certificate must chain to. */
  tls: TlsMaterial;
  /**
   * Local address to bind; the unspecified address of the server's family when absent.
   */
  bindHost?: string;
  /** Told about exceptions from the connection's handlers (each closes the connection). */
  onHandlerError?: HandlerErrorReporter;
  /**
   * Receives the server's datagrams whose QUIC fixed bit is clear: channel packets
   * (`shared/protocol/channel_packet.ts`). Without it they go to quiche, which drops them.
   * `packet` is only valid during the call.
   */
  onChannelPacket?: (packet: Uint8Array) => void;
}

/** A client connection plus its socket, which channel packets to the server share. */
export interface QuicClientConnection extends QuicConnection {
  /** The connection's own UDP socket. */
  readonly socket: UdpSocket;
}

/**
 * Starts a QUIC handshake with `server` and returns the connection at once; its
 * `onEstablished` / `onClosed` handlers report how the handshake went. The UDP socket is
 * closed when the connection finishes.
 *
 * @example
 * ```ts ignore
 * const conn = connectQuic({ server: { host: "127.0.0.1", port: 4433 }, serverName: "localhost", tls });
 * conn.setHandlers({ onEstablished: () => conn.sendDatagram(new Uint8Array([1])) });
 * ```
 */
export function connectQuic(options: QuicClientOptions): QuicClientConnection {
  const { server, serverName } = options;
  const bindHost = options.bindHost ?? (server.host.includes(":") ? "::" : "0.0.0.0");
  const config = createQuicConfig(options.tls, options);
  const { onChannelPacket } = options;
  let deliver: (packet: Uint8Array, from: Deno.NetAddr) => void = () => {};
  const socket = openUdpSocket({
    host: bindHost,
    port: 0,
    // quiche writes each packet into one pooled buffer: it must hold the largest we send.
    sendBufferBytes: sendBufferBytesFor(options.maxUdpPayload),
    onPacket(packet, from) {
      // Only the server may talk to this socket; anything else is injected traffic.
      if (from.port !== server.port || from.hostname !== server.host) return;
      if (onChannelPacket !== undefined && packet.length > 0 && (packet[0] & 0x40) === 0) {
        onChannelPacket(packet);
      } else deliver(packet, from);
    },
  });
  const local: HostPort = { host: socket.addr.hostname, port: socket.addr.port };
  const native = quiche.Connection.connect(
    serverName,
    randomBytes(CONN_ID_LEN),
    local,
    server,
    config,
  );
  const state = createConnectionState(
    native,
    local,
    server,
    socket,
    () => socket.close(),
    options.onHandlerError,
  );
  deliver = (packet, from) => receivePacket(state, packet, from);
  // The first flight (ClientHello) goes out after the caller has set its handlers.
  queueMicrotask(state.flushNow);
  return Object.assign(state.api, { socket });
}
