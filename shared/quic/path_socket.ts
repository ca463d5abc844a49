/**
 * The socket an end-to-end session's QUIC connection writes to: every packet goes out as a
 * channel packet on the current **path** (a relay channel: the UDP socket of our connection
 * to that relay, the relay's address, and the channel id), and the path can change between
 * two packets without quiche noticing. quiche always sees the same two stand-in addresses,
 * so a move is not a QUIC migration: no path validation, no congestion reset, no new
 * connection id.
 *
 * @module
 */
import {
  CHANNEL_HEADER_BYTES,
  ChannelPacketType,
  writeChannelHeader,
} from "../protocol/channel_packet.ts";
import type { UdpSocket, UdpSocketKind, UdpTarget } from "./udp_socket.ts";

/** A carrier of an end-to-end session's packets. */
export interface SessionPath {
  /** For logs: e.g. `relay 127.0.0.1:4433 channel 17`. */
  readonly label: string;
  /** The socket of our connection to the relay (channel packets share it). */
  readonly socket: UdpSocket;
  /** The relay's address. */
  readonly target: UdpTarget;
  /** Our side's id of the channel at that relay. */
  readonly channel: number;
}

/** A {@linkcode UdpSocket} over a replaceable {@linkcode SessionPath}. */
export interface PathSocket extends UdpSocket {
  /** The path packets go to now, or null (they are dropped; QUIC retransmits them later). */
  path: SessionPath | null;
  /** Packets dropped because no path was set. */
  readonly unrouted: number;
}

/**
 * The stand-in addresses quiche is given for both ends of every end-to-end connection:
 * constant, so that a change of path is invisible to it.
 */
export const SESSION_CLIENT_ADDRESS: Deno.NetAddr = {
  transport: "udp",
  hostname: "127.0.0.1",
  port: 1,
};
/** See {@linkcode SESSION_CLIENT_ADDRESS}. */
export const SESSION_SERVER_ADDRESS: Deno.NetAddr = {
  transport: "udp",
  hostname: "127.0.0.1",
  port: 2,
};

/**
 * Creates a path socket; `kind` names the kind of the sockets its paths use.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createPathSocket } from "./path_socket.ts";
 *
 * const socket = createPathSocket("portable", 2048);
 * socket.sendBuffer().set([1, 2, 3]);
 * socket.commit(3, { transport: "udp", hostname: "127.0.0.1", port: 1 });
 * assert.equal(socket.unrouted, 1); // no path yet
 * ```
 *
 * @param kind The kind of the underlying sockets (reported as this socket's kind).
 * @param bufferBytes Size of the buffer packets are written into while there is no path.
 * @returns The socket, without a path.
 */
export function createPathSocket(kind: UdpSocketKind, bufferBytes: number): PathSocket {
  const spare = new Uint8Array(bufferBytes);
  /** The underlying buffer the last `sendBuffer()` handed out a view of, with its path. */
  let lent: { buffer: Uint8Array; path: SessionPath } | null = null;
  let unrouted = 0;
  const socket: PathSocket = {
    addr: SESSION_CLIENT_ADDRESS,
    kind,
    path: null,
    get unrouted() {
      return unrouted;
    },
    sendBuffer() {
      const path = socket.path;
      if (path === null) {
        lent = null;
        return spare;
      }
      const buffer = path.socket.sendBuffer();
      lent = { buffer, path };
      return buffer.subarray(CHANNEL_HEADER_BYTES);
    },
    commit(length) {
      const taken = lent;
      lent = null;
      if (taken === null || taken.path !== socket.path) {
        unrouted++;
        return;
      }
      writeChannelHeader(taken.buffer, ChannelPacketType.DATA, taken.path.channel);
      taken.path.socket.commit(CHANNEL_HEADER_BYTES + length, taken.path.target);
    },
    send(data) {
      const buffer = socket.sendBuffer();
      buffer.set(data);
      socket.commit(data.length, SESSION_SERVER_ADDRESS);
    },
    get pendingSends() {
      return socket.path?.socket.pendingSends ?? 0;
    },
    close() {
      socket.path = null;
    },
    closed: Promise.resolve(),
  };
  return socket;
}
