/**
 * The quiche binding shipped by `@matrixai/quic`, and the types we use from it.
 *
 * We drive quiche directly (not `QUICServer`/`QUICClient`): the high-level API costs about
 * 1 MB/s of throughput and hides DATAGRAM frames.
 *
 * @module
 */
import quic from "@matrixai/quic";

/** The native quiche module: `Config`, `Connection`, `Header`, `retry`, `negotiateVersion`. */
export const quiche: typeof quic.native.quiche = quic.native.quiche;

/** A quiche connection as exposed by the binding. */
export type NativeConnection = ReturnType<typeof quiche.Connection.accept>;
/** A quiche configuration as exposed by the binding. */
export type NativeConfig = ReturnType<typeof quiche.Config.withBoringSslCtx>;
/** A parsed QUIC packet header. */
export type PacketHeader = ReturnType<typeof quiche.Header.fromSlice>;
/** Connection-level statistics reported by quiche. */
export type ConnectionStats = ReturnType<NativeConnection["stats"]>;
/** A host and port as quiche expects them (`host` is an IP literal). */
export interface HostPort {
  host: string;
  port: number;
}

/** Length of the connection ids we issue; short-header packets are parsed with it. */
export const CONN_ID_LEN = 16;

/** Application-layer protocol id negotiated by every ztna-edge QUIC connection. */
export const ALPN = "ztna/1";

/** quiche's error for "nothing to do": a normal condition, not a failure. */
export function isDone(error: unknown): boolean {
  return error instanceof Error && error.message === "Done";
}
