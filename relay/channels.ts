/**
 * The relay's channels: each binds one agent connection to one connector connection and
 * carries the packets of their end-to-end session, which the relay cannot read. A channel
 * has an id on each side; a packet is forwarded only when it comes from the address of the
 * connection its id belongs to, with the id rewritten to the far side's. No crypto, no
 * reassembly: per-channel counters and a per-identity packet budget, and pings answered for
 * the ends' path keepalive.
 *
 * @module
 */
import { randomInt } from "node:crypto";
import {
  CHANNEL_HEADER_BYTES,
  ChannelPacketType,
  MAX_CHANNEL_ID,
  readChannelId,
  writeChannelHeader,
} from "../shared/protocol/channel_packet.ts";
import type { QuicConnection } from "../shared/quic/mod.ts";
import { createTokenBucket } from "../shared/token_bucket.ts";
import type { UdpSocket, UdpTarget } from "../shared/quic/udp_socket.ts";

/** What a channel needs of a session. */
export interface ChannelPeer {
  conn: QuicConnection;
  identity: string;
}

/** One side of a channel. */
export interface ChannelSide<S extends ChannelPeer> {
  session: S;
  /** This side's id. */
  id: number;
  /** Where this side's packets go (follows the connection's address). */
  target: UdpTarget;
}

/** A channel between an agent and a connector. */
export interface Channel<S extends ChannelPeer> {
  agent: ChannelSide<S>;
  connector: ChannelSide<S>;
  /** The services the agent may reach through it. */
  services: Set<string>;
  /** The end-to-end session it carries (the agent's id for it). */
  session: string;
  /** Set once the connector answered `channel_ready`. */
  ready: boolean;
  /** Packets and bytes forwarded, by direction. */
  toConnector: { packets: number; bytes: number };
  toAgent: { packets: number; bytes: number };
}

/** Why a channel packet was dropped. */
export type ChannelDropReason =
  | "malformed"
  | "unknown_channel"
  | "wrong_source"
  | "rate_limited"
  | "too_large";

/** Running totals for the metrics (plain numbers: counted on the hot path). */
export interface ChannelCounters {
  packets: { to_connector: number; to_agent: number };
  bytes: { to_connector: number; to_agent: number };
  pongs: number;
  drops: Record<ChannelDropReason, number>;
}

/** Options for {@linkcode createChannels}. */
export interface ChannelsOptions {
  /** The relay's socket (the one its QUIC connections use). */
  socket: () => UdpSocket;
  /** Channel packets one identity may send per second (burst: one second's worth). */
  packetsPerSecondPerIdentity: number;
  /** Largest channel packet forwarded (the far side's receive limit). */
  maxPacketBytes: number;
}

/** The channel table. */
export interface Channels<S extends ChannelPeer> {
  readonly counters: ChannelCounters;
  /** Live channels. */
  readonly size: number;
  /** Opens a channel between `agent` and `connector` for `session`, granting `services`. */
  open(agent: S, connector: S, session: string, services: Iterable<string>): Channel<S>;
  /** The channel between these two connections for `session`, if any. */
  find(agent: S, connector: S, session: string): Channel<S> | undefined;
  /** The channel whose side id (of `session`'s side) is `id`. */
  byId(session: S, id: number): Channel<S> | undefined;
  /** Removes a channel; false when it was already gone. */
  close(channel: Channel<S>): boolean;
  /** Channels one connection is a side of. */
  of(session: S): Channel<S>[];
  /** Forwards (or answers, or drops and counts) one channel packet. */
  forward(packet: Uint8Array, from: Deno.NetAddr): void;
}

/**
 * Creates an empty channel table.
 *
 * @example
 * ```ts ignore
 * const channels = createChannels({ socket: () => server.socket, packetsPerSecondPerIdentity: 100_000, maxPacketBytes: 1500 });
 * ```
 */
export function createChannels<S extends ChannelPeer>(options: ChannelsOptions): Channels<S> {
  const sides = new Map<number, { channel: Channel<S>; side: "agent" | "connector" }>();
  const bySession = new Map<S, Set<Channel<S>>>();
  const budgets = new Map<string, { take: () => boolean; users: number }>();
  const counters: ChannelCounters = {
    packets: { to_connector: 0, to_agent: 0 },
    bytes: { to_connector: 0, to_agent: 0 },
    pongs: 0,
    drops: { malformed: 0, unknown_channel: 0, wrong_source: 0, rate_limited: 0, too_large: 0 },
  };

  function freshId(): number {
    for (;;) {
      // Unpredictable, so that an outsider cannot aim packets at a channel it has not seen.
      const id = randomInt(1, MAX_CHANNEL_ID);
      if (!sides.has(id)) return id;
    }
  }

  function budgetFor(identity: string) {
    let budget = budgets.get(identity);
    if (budget === undefined) {
      budget = {
        take: createTokenBucket({ perSecond: options.packetsPerSecondPerIdentity }),
        users: 0,
      };
      budgets.set(identity, budget);
    }
    budget.users++;
    return budget;
  }

  function targetOf(conn: QuicConnection, current?: UdpTarget): UdpTarget {
    const { host, port } = conn.peer;
    if (current !== undefined && current.hostname === host && current.port === port) {
      return current;
    }
    return { transport: "udp", hostname: host, port };
  }

  const budgetOf = new WeakMap<Channel<S>, { take: () => boolean }>();

  return {
    counters,
    get size() {
      return sides.size / 2;
    },
    open(agent, connector, session, services) {
      const channel: Channel<S> = {
        agent: { session: agent, id: freshId(), target: targetOf(agent.conn) },
        connector: { session: connector, id: 0, target: targetOf(connector.conn) },
        services: new Set(services),
        session,
        ready: false,
        toConnector: { packets: 0, bytes: 0 },
        toAgent: { packets: 0, bytes: 0 },
      };
      sides.set(channel.agent.id, { channel, side: "agent" });
      channel.connector.id = freshId();
      sides.set(channel.connector.id, { channel, side: "connector" });
      for (const end of [agent, connector]) {
        let set = bySession.get(end);
        if (set === undefined) bySession.set(end, set = new Set());
        set.add(channel);
      }
      budgetOf.set(channel, budgetFor(agent.identity));
      return channel;
    },
    find(agent, connector, session) {
      for (const channel of bySession.get(agent) ?? []) {
        if (channel.connector.session === connector && channel.session === session) return channel;
      }
      return undefined;
    },
    byId(session, id) {
      const entry = sides.get(id);
      return entry !== undefined && entry.channel[entry.side].session === session
        ? entry.channel
        : undefined;
    },
    close(channel) {
      if (!sides.delete(channel.agent.id)) return false;
      sides.delete(channel.connector.id);
      for (const end of [channel.agent.session, channel.connector.session]) {
        const set = bySession.get(end);
        set?.delete(channel);
        if (set?.size === 0) bySession.delete(end);
      }
      const identity = channel.agent.session.identity;
      const budget = budgets.get(identity);
      if (budget !== undefined && --budget.users === 0) budgets.delete(identity);
      return true;
    },
    of(session) {
      return [...(bySession.get(session) ?? [])];
    },
    forward(packet, from) {
      if (packet.length < CHANNEL_HEADER_BYTES) {
        counters.drops.malformed++;
        return;
      }
      const type = packet[0];
      const entry = sides.get(readChannelId(packet));
      if (entry === undefined) {
        counters.drops.unknown_channel++;
        return;
      }
      const { channel } = entry;
      const here = channel[entry.side];
      // The id alone proves nothing (it crossed the network in clear): the packet must come
      // from the connection this side of the channel belongs to.
      const peer = here.session.conn.peer;
      if (peer.port !== from.port || peer.host !== from.hostname) {
        counters.drops.wrong_source++;
        return;
      }
      const socket = options.socket();
      if (type === ChannelPacketType.PING && packet.length === CHANNEL_HEADER_BYTES + 8) {
        const out = socket.sendBuffer();
        out.set(packet);
        out[0] = ChannelPacketType.PONG;
        here.target = targetOf(here.session.conn, here.target);
        socket.commit(packet.length, here.target);
        counters.pongs++;
        return;
      }
      if (type !== ChannelPacketType.DATA || packet.length === CHANNEL_HEADER_BYTES) {
        counters.drops.malformed++;
        return;
      }
      if (packet.length > options.maxPacketBytes) {
        counters.drops.too_large++;
        return;
      }
      if (!budgetOf.get(channel)!.take()) {
        counters.drops.rate_limited++;
        return;
      }
      const toConnector = entry.side === "agent";
      const there = toConnector ? channel.connector : channel.agent;
      there.target = targetOf(there.session.conn, there.target);
      const out = socket.sendBuffer();
      out.set(packet);
      writeChannelHeader(out, ChannelPacketType.DATA, there.id);
      socket.commit(packet.length, there.target);
      const body = packet.length - CHANNEL_HEADER_BYTES;
      if (toConnector) {
        channel.toConnector.packets++;
        channel.toConnector.bytes += body;
        counters.packets.to_connector++;
        counters.bytes.to_connector += body;
      } else {
        channel.toAgent.packets++;
        channel.toAgent.bytes += body;
        counters.packets.to_agent++;
        counters.bytes.to_agent += body;
      }
    },
  };
}
