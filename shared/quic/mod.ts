/**
 * A lean QUIC endpoint over quiche: servers, clients and the connection surface the relay,
 * connector and agent build on.
 *
 * @module
 */
export { connectQuic, type QuicClientConnection, type QuicClientOptions } from "./client.ts";
export {
  CloseCode,
  type CloseInfo,
  type ConnectionError,
  type ConnectionHandlers,
  type HandlerErrorReporter,
  type QuicConnection,
  StreamGoneError,
} from "./connection.ts";
export { describeClose, handshakeFailureReason, tlsAlertName } from "./close_reason.ts";
export { ALPN, type HostPort } from "./native.ts";
export {
  type PacketDropReason,
  type QuicServer,
  type QuicServerOptions,
  type ServerCounters,
  startQuicServer,
} from "./server.ts";
export { createQuicConfig, type TlsMaterial, type TransportOptions } from "./tls_config.ts";
