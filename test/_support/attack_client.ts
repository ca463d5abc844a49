/**
 * A hand-driven relay peer for attack tests: our own QUIC client speaking the control
 * protocol one message at a time, so a test can do what a hostile agent or connector would
 * (stop the control stream, flip registrations, send oversized frames, never answer).
 *
 * @module
 */
import { createControlChannel } from "../../shared/control_channel.ts";
import { type ControlMessage, PROTOCOL_VERSION } from "../../shared/protocol/control.ts";
import { encodeWhole } from "../../shared/protocol/datagram.ts";
import {
  type CloseInfo,
  connectQuic,
  type QuicClientConnection,
  type QuicConnection,
} from "../../shared/quic/mod.ts";
import { type NativeConnection, quiche } from "../../shared/quic/native.ts";
import { createQuicConfig } from "../../shared/quic/tls_config.ts";
import { readTlsFiles } from "../../shared/tls_files.ts";
import { join } from "node:path";
import { PROJECT_ROOT } from "../../tools/permissions.ts";
import { type ComponentProcess, spawnLogged } from "./harness.ts";
import { waitFor } from "./wait.ts";

/** A connected peer. */
export interface Peer {
  readonly conn: QuicClientConnection;
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
  /** How long to wait for the handshake before giving up (rejects). @default {10000} */
  handshakeMs?: number;
  /** Offer DATAGRAM frames. @default {true} */
  datagrams?: boolean;
  /** A connector's `hello.instance`. */
  instance?: string;
  /** Receives the relay's channel packets (valid only during the call). */
  onChannelPacket?: (packet: Uint8Array) => void;
}

/** Peers not yet closed, for {@linkcode closePeers}. */
const openPeers = new Set<QuicConnection>();

/**
 * Closes every peer this module dialled and waits (bounded) until each has finished, so no
 * QUIC socket outlives its test: a test module that ended with sockets still receiving made
 * the test runner crash in a runtime worker.
 */
export async function closePeers(ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  for (const conn of openPeers) conn.close(0, "test done");
  while (openPeers.size > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
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
    onChannelPacket: options.onChannelPacket,
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
      onClosed(info) {
        openPeers.delete(conn);
        resolve(info);
      },
    });
  });
  openPeers.add(conn);
  try {
    await waitFor(
      "handshake",
      () => conn.established || conn.closed,
      options.handshakeMs ?? 10_000,
    );
  } catch (error) {
    conn.close(0, "gave up");
    throw error;
  }
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
      v: PROTOCOL_VERSION,
      role,
      ...(options.token === undefined ? {} : { token: options.token }),
      ...(options.instance === undefined ? {} : { instance: options.instance }),
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

/** Handshakes held half-open by {@linkcode holdHalfOpen}. */
export interface HalfOpen {
  /** Handshakes whose Retry was followed (the relay then holds state for them). */
  readonly held: number;
  /** Stops retransmitting and closes the socket. */
  close(): void;
}

/**
 * Opens `count` handshakes from `bindHost` that follow the relay's Retry, send their Initial
 * and then ignore everything the relay says; quiche's own loss timer keeps resending the
 * Initial, which keeps each one alive at the relay (finding 4's attacker). Needs no
 * credentials.
 */
export async function holdHalfOpen(
  relayPort: number,
  bindHost: string,
  count: number,
  ca: Uint8Array,
): Promise<HalfOpen> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: bindHost, port: 0 });
  const local = { host: bindHost, port: (socket.addr as Deno.NetAddr).port };
  const relay = { host: "127.0.0.1", port: relayPort };
  const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: relayPort };
  const config = createQuicConfig({ ca });
  const buffer = new Uint8Array(1500);
  const clients = new Map<string, { native: NativeConnection; retried: boolean }>();
  let open = true;
  let held = 0;
  const flush = async (native: NativeConnection) => {
    for (;;) {
      const sent = native.send(buffer);
      if (sent === null) return;
      await socket.send(buffer.subarray(0, sent[0]), to).catch(() => {});
    }
  };
  (async () => {
    try {
      for (;;) {
        const [packet] = await socket.receive();
        // The relay's packets start with the client's id as their DCID (long header).
        const key = Array.from(packet.subarray(6, 6 + packet[5])).join(",");
        const client = clients.get(key);
        if (client === undefined || client.retried) continue; // ignored, as promised
        client.retried = true;
        try {
          client.native.recv(packet, { from: relay, to: local });
        } catch {
          continue;
        }
        held++;
        await flush(client.native);
      }
    } catch {
      // Socket closed.
    }
  })();
  for (let i = 0; i < count; i++) {
    const scid = crypto.getRandomValues(new Uint8Array(16));
    const native = quiche.Connection.connect("localhost", scid, local, relay, config);
    clients.set(Array.from(scid).join(","), { native, retried: false });
    await flush(native);
  }
  const resend = setInterval(async () => {
    for (const { native } of clients.values()) {
      if (!open) return;
      const wait = native.timeout();
      if (wait !== null && wait <= 0) native.onTimeout();
      await flush(native);
    }
  }, 200);
  return {
    get held() {
      return held;
    },
    close() {
      open = false;
      clearInterval(resend);
      socket.close();
    },
  };
}

/**
 * Starts `test/_support/preauth_attacker.ts` (hundreds of pre-auth connections) in its own process, so
 * the test runner never holds that many native quiche connections; resolves once it is ready.
 */
export function startAttacker(options: Record<string, unknown>): Promise<ComponentProcess> {
  return spawnLogged("attacker", [
    "run",
    "-A",
    join(PROJECT_ROOT, "test", "_support", "preauth_attacker.ts"),
    JSON.stringify(options),
  ], { timeoutMs: 60_000 });
}
