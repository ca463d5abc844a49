/**
 * What both UDP socket implementations share: the process-wide counters and the guarded
 * delivery of a received datagram.
 *
 * @module
 */
import type { PacketHandler } from "./udp_socket.ts";

/** Counters over every socket of the process (exported as metrics). */
export interface UdpStats {
  /** Datagrams received and sent. */
  packets: { received: number; sent: number };
  /** System calls (or Deno ops) that moved them, by direction. */
  calls: { received: number; sent: number };
  /** Datagrams not sent: the socket buffer was full, or the kernel refused them. */
  sendDrops: { would_block: number; error: number; refused: number };
  /** Received datagrams longer than the receive buffer, dropped. */
  truncated: number;
  /** Datagrams the kernel dropped on a full receive buffer (`SO_RXQ_OVFL`). */
  kernelDrops: number;
  /** GSO sends (each carrying several datagrams). */
  segmentedSends: number;
  /** Buffer sizes in force as the kernel reports them, last socket opened (0: unknown). */
  bufferBytes: { receive: number; send: number };
}

/** The live counters (the socket implementations add to them). */
export const stats: UdpStats = {
  packets: { received: 0, sent: 0 },
  calls: { received: 0, sent: 0 },
  sendDrops: { would_block: 0, error: 0, refused: 0 },
  truncated: 0,
  kernelDrops: 0,
  segmentedSends: 0,
  bufferBytes: { receive: 0, send: 0 },
};

/** Hands a datagram to the socket's handler; an exception is reported, never thrown. */
export function deliver(
  onPacket: PacketHandler,
  onError: (error: unknown, during: "send" | "receive") => void,
  data: Uint8Array,
  from: Deno.NetAddr,
): void {
  try {
    onPacket(data, from);
  } catch (error) {
    // A handler bug must not stop the socket serving every other peer.
    onError(error, "receive");
  }
}
