/**
 * Channel packets: what agents and connectors send the relay, on the same UDP socket as their
 * QUIC connection to it, to carry an end-to-end session the relay cannot read
 * (docs/PROTOCOL.md §7):
 *
 * `u8 type | u32 BE channel id | body`
 *
 * - type 1 (data): the body is one opaque end-to-end QUIC packet; the relay rewrites the id
 *   to the far side's and forwards the packet unchanged.
 * - type 2 (ping) and 3 (pong): path keepalive; the body is an 8-byte nonce the relay echoes.
 *
 * Every type has the two high bits clear. Every QUIC v1/v2 packet sets the second one (the
 * fixed bit, RFC 9000 §17), so one byte tells a channel packet from a QUIC packet before any
 * parse.
 *
 * @module
 */

/** Bytes in front of a channel packet's body. */
export const CHANNEL_HEADER_BYTES = 5;
/** Bytes of a ping's or pong's nonce. */
export const KEEPALIVE_NONCE_BYTES = 8;

/** The channel packet types. */
export const ChannelPacketType = {
  /** An end-to-end QUIC packet. */
  DATA: 1,
  /** Path keepalive asked of the relay. */
  PING: 2,
  /** The relay's answer to a ping (same nonce). */
  PONG: 3,
} as const;

/** One of {@linkcode ChannelPacketType}. */
export type ChannelPacketTypeValue = typeof ChannelPacketType[keyof typeof ChannelPacketType];

/** Largest channel id (ids are u32). */
export const MAX_CHANNEL_ID = 0xffff_ffff;

/**
 * True when `packet` is not a QUIC packet (fixed bit clear) and so belongs to the channel
 * layer; whether it is a *valid* channel packet is {@linkcode parseChannelPacket}'s question.
 *
 * @example Usage
 * ```ts
 * import { isChannelTraffic } from "./channel_packet.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isChannelTraffic(new Uint8Array([0x01, 0, 0, 0, 7])), true);
 * assert.equal(isChannelTraffic(new Uint8Array([0x40, 1, 2])), false); // a short-header QUIC packet
 * ```
 *
 * @param packet A received UDP payload.
 * @returns Whether it is channel traffic.
 */
export function isChannelTraffic(packet: Uint8Array): boolean {
  return packet.length > 0 && (packet[0] & 0x40) === 0;
}

/** A parsed channel packet; `body` is a view into the input. */
export interface ChannelPacket {
  type: ChannelPacketTypeValue;
  channel: number;
  body: Uint8Array;
}

/**
 * Parses a channel packet. Never throws: an unknown type, a short packet or a keepalive
 * whose nonce is not 8 bytes yields `null`, for the caller to count.
 *
 * @example Usage
 * ```ts
 * import { ChannelPacketType, parseChannelPacket, writeChannelHeader } from "./channel_packet.ts";
 * import assert from "node:assert/strict";
 *
 * const packet = new Uint8Array(8);
 * writeChannelHeader(packet, ChannelPacketType.DATA, 42);
 * packet.set([1, 2, 3], 5);
 * const parsed = parseChannelPacket(packet);
 * assert.equal(parsed?.channel, 42);
 * assert.deepEqual([...parsed!.body], [1, 2, 3]);
 * ```
 *
 * @param packet The received bytes.
 * @returns The packet, or `null` when malformed.
 */
export function parseChannelPacket(packet: Uint8Array): ChannelPacket | null {
  if (packet.length < CHANNEL_HEADER_BYTES) return null;
  const type = packet[0];
  if (
    type !== ChannelPacketType.DATA && type !== ChannelPacketType.PING &&
    type !== ChannelPacketType.PONG
  ) {
    return null;
  }
  const body = packet.subarray(CHANNEL_HEADER_BYTES);
  if (type === ChannelPacketType.DATA ? body.length === 0 : body.length !== KEEPALIVE_NONCE_BYTES) {
    return null;
  }
  return { type, channel: readChannelId(packet), body };
}

/**
 * Reads the channel id of a packet known to be at least {@linkcode CHANNEL_HEADER_BYTES}
 * long.
 *
 * @param packet The packet.
 * @returns Its channel id.
 */
export function readChannelId(packet: Uint8Array): number {
  return ((packet[1] << 24) | (packet[2] << 16) | (packet[3] << 8) | packet[4]) >>> 0;
}

/**
 * Writes a channel header at the start of `out` (which must hold at least
 * {@linkcode CHANNEL_HEADER_BYTES}).
 *
 * @param out Where the header goes.
 * @param type The packet type.
 * @param channel The channel id (u32).
 * @throws {RangeError} When `channel` is not a u32 or `out` is too short.
 */
export function writeChannelHeader(
  out: Uint8Array,
  type: ChannelPacketTypeValue,
  channel: number,
): void {
  if (!Number.isInteger(channel) || channel < 0 || channel > MAX_CHANNEL_ID) {
    throw new RangeError(
      `Cannot write channel header as 'channel' must be a u32: current value is ${channel}`,
    );
  }
  if (out.length < CHANNEL_HEADER_BYTES) {
    throw new RangeError(
      `Cannot write channel header as 'out' must hold ${CHANNEL_HEADER_BYTES} bytes: current length is ${out.length}`,
    );
  }
  out[0] = type;
  out[1] = channel >>> 24;
  out[2] = (channel >>> 16) & 0xff;
  out[3] = (channel >>> 8) & 0xff;
  out[4] = channel & 0xff;
}
