/**
 * A hand-driven relay peer for attack tests: our own QUIC client speaking the control
 * protocol one message at a time, so a test can do what a hostile agent or connector would
 * (stop the control stream, flip registrations, send oversized frames, never answer).
 *
 * @module
 */
import { createControlChannel } from "../shared/control_channel.ts";
import type { ControlMessage } from "../shared/protocol/control.ts";
import { encodeWhole } from "../shared/protocol/datagram.ts";
import { type CloseInfo, connectQuic, type QuicConnection } from "../shared/quic/mod.ts";
import { readTlsFiles } from "../shared/tls_files.ts";
import { waitFor } from "./harness.ts";

/** A connected peer. */
export interface Peer {
  readonly conn: QuicConnection;
  /** Every control message received, in order. */
  readonly messages: ControlMessage[];
  /** DATAGRAM frames received (copies). */
  readonly datagrams: Uint8Array[];
  /** Resolves when the connection is closed. */
  readonly closed: Promise<CloseInfo>;
  /** Sends a control message (false once the channel failed). */
  send(message: ControlMessage): boolean;
  /** Waits (bounded) for a message matching `match` and returns it. */
  next<T extends ControlMessage>(match: (m: ControlMessage) => m is T, ms?: number): Promise<T>;
  /** Opens a UDP flow to `service` and returns its flow id and the relay's `max_datagram`. */
  openUdp(service: string, id?: number): Promise<{ flow: number; maxDatagram?: number }>;
  /** Sends one DATAGRAM frame of `payload` on `flow`; false when quiche refused it. */
  sendOnFlow(flow: number, payload: Uint8Array): boolean;
}

/** Options for {@linkcode dialPeer}. */
export interface DialOptions {
  /** The relay's UDP port on 127.0.0.1. */
  relayPort: number;
  /** Certificate files of the identity. */
  tls: { cert?: string; key?: string; ca: string };
  /** Role said in `hello`; null sends no hello. @default {"agent"} */
  role?: "agent" | "connector" | null;
  /** Token for token auth. */
  token?: string;
  /** Largest UDP payload this peer sends (a big one lets it send big DATAGRAMs). */
  maxUdpPayload?: number;
  /** Local address to bind. @default {"127.0.0.1"} */
  bindHost?: string;
  /** Largest UDP payload this peer accepts (a small one shrinks what the relay may send it). */
  maxRecvUdpPayload?: number;
  /** Offer DATAGRAM frames. @default {true} */
  datagrams?: boolean;
}

/** Dials the relay and, unless `role` is null, completes `hello`. */
export async function dialPeer(options: DialOptions): Promise<Peer> {
  const { relayPort, role = "agent" } = options;
  const conn = connectQuic({
    server: { host: "127.0.0.1", port: relayPort },
    serverName: "localhost",
    tls: readTlsFiles(options.tls),
    maxUdpPayload: options.maxUdpPayload,
    datagrams: options.datagrams,
    maxRecvUdpPayload: options.maxRecvUdpPayload,
    bindHost: options.bindHost ?? "127.0.0.1",
  });
  const messages: ControlMessage[] = [];
  const datagrams: Uint8Array[] = [];
  const channel = createControlChannel(conn, {
    onMessage: (message) => messages.push(message),
    onProtocolError: () => {},
  });
  const closed = new Promise<CloseInfo>((resolve) => {
    conn.setHandlers({
      onStreamReadable: (id) => id === 0 && channel.readable(),
      onStreamWritable: (id) => id === 0 && channel.writable(),
      onDatagram: (frame) => datagrams.push(frame.slice()),
      onClosed: resolve,
    });
  });
  await waitFor("handshake", () => conn.established || conn.closed, 10_000);
  const next = async <T extends ControlMessage>(
    match: (m: ControlMessage) => m is T,
    ms = 10_000,
  ): Promise<T> => {
    await waitFor("a matching control message", () => messages.some(match), ms);
    return messages.find(match)!;
  };
  if (role !== null && conn.established) {
    channel.send({
      type: "hello",
      v: 1,
      role,
      ...(options.token === undefined ? {} : { token: options.token }),
    });
    await next((m): m is ControlMessage => m.type === "hello");
  }
  let nextRequest = 1000;
  return {
    conn,
    messages,
    datagrams,
    closed,
    send: (message) => channel.send(message),
    next,
    async openUdp(service, id = nextRequest++) {
      channel.send({ type: "open", id, service, protocol: "udp" });
      const answer = await next((m): m is ControlMessage & { type: "opened" | "refused" } =>
        (m.type === "opened" || m.type === "refused") && m.id === id
      );
      if (answer.type === "refused") throw new Error(`open refused: ${answer.reason}`);
      return { flow: answer.flow, maxDatagram: answer.max_datagram };
    },
    sendOnFlow(flow, payload) {
      const frame = new Uint8Array(payload.length + 8);
      const length = encodeWhole(flow, payload, frame);
      return conn.sendDatagram(frame.subarray(0, length));
    },
  };
}

/** Resolves with the close info, or null after `ms`. */
export function closedWithin(peer: Peer, ms: number): Promise<CloseInfo | null> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    peer.closed.finally(() => clearTimeout(timer)),
    new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms)),
  ]);
}
