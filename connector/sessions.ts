/**
 * The connector's end-to-end sessions (docs/PROTOCOL.md §7): the channels relays announce,
 * the sessions agents open through them, and what each session may reach.
 *
 * A relay's `channel` message names the agent identity a channel carries and the services
 * it granted. The first DATA packet on a channel must be a QUIC Initial; the session then
 * runs a handshake in which the agent's certificate must name that identity. A session is
 * keyed by agent identity and session id, so the same agent's session can move to a channel
 * of another relay, and nobody else's channel can reach it. The latest announcement is the
 * grant; the connector's own `agents` allowlist is checked on top of it, so a relay alone
 * cannot open a service to an identity this connector's operator did not allow.
 *
 * @module
 */
import type { Logger } from "../shared/log.ts";
import type { ChannelMessage } from "../shared/protocol/control.ts";
import {
  CHANNEL_HEADER_BYTES,
  ChannelPacketType,
  readChannelId,
} from "../shared/protocol/channel_packet.ts";
import { carryFlows, type FlowSession, type FlowSessionHandlers } from "../shared/flow_session.ts";
import { acceptE2eSession, type E2eSession, type SessionPath } from "../shared/quic/e2e_session.ts";
import type { HandlerErrorReporter, TlsMaterial } from "../shared/quic/mod.ts";
import type { RelaySession } from "../shared/relay_link.ts";
import { SESSION_GONE } from "../shared/protocol/control.ts";
import type { EdgeMetrics } from "../shared/ops/edge_metrics.ts";

/** Options for {@linkcode createConnectorSessions}. */
export interface ConnectorSessionsOptions {
  /** Our certificate (a TLS server one too) and the CA agents' certificates chain to. */
  tls(): TlsMaterial;
  /** Idle timeout of each session. */
  idleTimeoutMs: number;
  /** Sessions one agent identity may hold at once; more are refused. */
  sessionsPerAgent: number;
  /** A session whose handshake has not completed in this time is closed. */
  handshakeTimeoutMs: number;
  /** The flows each established session carries. */
  handlers: FlowSessionHandlers;
  /** The grant of an established session changed (a relay re-announced its channel). */
  onGrantChanged(session: FlowSession): void;
  onHandlerError?: HandlerErrorReporter;
  logger: Logger;
  metrics: EdgeMetrics;
}

/** The connector's session table; the relay links route channel traffic here. */
export interface ConnectorSessions {
  /** A relay's `channel` announcement: recorded, then answered `channel_ready`. */
  announce(relay: RelaySession, message: ChannelMessage): void;
  /** A relay removed a channel. */
  closed(relay: RelaySession, channel: number): void;
  /** A channel packet from `relay` (valid only during the call). */
  packet(relay: RelaySession, packet: Uint8Array): void;
  /** The link to `relay` ended: its channels are gone (sessions wait for the agent to move). */
  relayDown(relay: RelaySession): void;
  /** The agent identity of an established session and the services it may use now. */
  grantOf(session: FlowSession): { agent: string; services: ReadonlySet<string> } | undefined;
  /** Established sessions. */
  count(): number;
  /** Closes every session (drain). */
  closeAll(code: number, reason: string): void;
}

interface Channel {
  relay: RelaySession;
  id: number;
  key: string;
  path: SessionPath;
}

interface Entry {
  agent: string;
  key: string;
  services: Set<string>;
  channels: Set<Channel>;
  e2e: E2eSession | null;
  flows: FlowSession | null;
  up: boolean;
}

/**
 * Creates the connector's session table.
 *
 * @example
 * ```ts ignore
 * const sessions = createConnectorSessions({ tls: () => tls, handlers, ... });
 * // relay link: onChannelPacket: (relay, packet) => sessions.packet(relay, packet)
 * ```
 */
export function createConnectorSessions(options: ConnectorSessionsOptions): ConnectorSessions {
  const { logger, metrics, handlers } = options;
  const channels = new Map<RelaySession, Map<number, Channel>>();
  const entries = new Map<string, Entry>();
  const byFlows = new Map<FlowSession, Entry>();

  function forgetIfIdle(entry: Entry): void {
    if (entry.e2e === null && entry.channels.size === 0) entries.delete(entry.key);
  }

  function dropChannel(channel: Channel): void {
    channels.get(channel.relay)?.delete(channel.id);
    const entry = entries.get(channel.key);
    if (entry === undefined) return;
    entry.channels.delete(channel);
    // Until the agent moves the session, what it sends back has nowhere to go; QUIC resends.
    if (entry.e2e?.path === channel.path) entry.e2e.setPath(null, "relay_closed");
    forgetIfIdle(entry);
  }

  function sessionsOf(agent: string): number {
    let n = 0;
    for (const entry of entries.values()) if (entry.agent === agent && entry.e2e !== null) n++;
    return n;
  }

  function accept(entry: Entry, channel: Channel, packet: Uint8Array): void {
    if (sessionsOf(entry.agent) >= options.sessionsPerAgent) {
      metrics.sessionRefusals.inc({ reason: "limit" });
      return;
    }
    const carried = carryFlows(
      (hooks) =>
        acceptE2eSession(packet, {
          ...hooks,
          tls: options.tls(),
          expectedPeer: entry.agent,
          path: channel.path,
          idleTimeoutMs: options.idleTimeoutMs,
          onHandlerError: options.onHandlerError,
        }),
      {
        ...handlers,
        onUp(flows) {
          entry.up = true;
          byFlows.set(flows, entry);
          handlers.onUp(flows);
        },
        onDown(flows, reason, up) {
          byFlows.delete(flows);
          entry.e2e = null;
          entry.flows = null;
          entry.up = false;
          forgetIfIdle(entry);
          if (up) handlers.onDown(flows, reason, up);
        },
      },
      {
        metrics,
        logger,
        peer: { role: "agent", identity: entry.agent },
        handshakeTimeoutMs: options.handshakeTimeoutMs,
      },
    );
    if (carried === null) {
      metrics.sessionRefusals.inc({ reason: "not_initial" });
      // Packets of a session we no longer have (it ended here, e.g. by idle timeout): the
      // agent would wait for answers until its own timeout. Closing the channel with this
      // reason tells it the session is gone, once.
      dropChannel(channel);
      channel.relay.send({ type: "channel_closed", channel: channel.id, reason: SESSION_GONE });
      return;
    }
    entry.e2e = carried.e2e;
    entry.flows = carried.flows;
  }

  return {
    announce(relay, message) {
      let table = channels.get(relay);
      if (table === undefined) channels.set(relay, table = new Map());
      const key = `${message.agent}\n${message.session}`;
      let channel = table.get(message.channel);
      if (channel !== undefined && channel.key !== key) {
        dropChannel(channel);
        channel = undefined;
      }
      if (channel === undefined) {
        channel = {
          relay,
          id: message.channel,
          key,
          path: {
            label: relay.relay,
            socket: relay.socket,
            target: relay.target,
            channel: message.channel,
          },
        };
        table.set(message.channel, channel);
      }
      let entry = entries.get(key);
      if (entry === undefined) {
        entry = {
          agent: message.agent,
          key,
          services: new Set(),
          channels: new Set(),
          e2e: null,
          flows: null,
          up: false,
        };
        entries.set(key, entry);
      }
      entry.channels.add(channel);
      const before = [...entry.services].join();
      entry.services = new Set(message.services);
      if (entry.up && entry.flows !== null && before !== [...entry.services].join()) {
        options.onGrantChanged(entry.flows);
      }
      relay.send({ type: "channel_ready", channel: message.channel });
    },
    closed(relay, id) {
      const channel = channels.get(relay)?.get(id);
      if (channel !== undefined) dropChannel(channel);
    },
    packet(relay, packet) {
      if (packet.length <= CHANNEL_HEADER_BYTES) {
        metrics.channelPackets.inc({ outcome: "malformed" });
        return;
      }
      const channel = channels.get(relay)?.get(readChannelId(packet));
      if (channel === undefined) {
        metrics.channelPackets.inc({ outcome: "unknown_channel" });
        return;
      }
      const entry = entries.get(channel.key)!;
      switch (packet[0]) {
        case ChannelPacketType.PONG:
          entry.e2e?.pong(packet, channel.path);
          return;
        case ChannelPacketType.DATA:
          if (entry.e2e === null) accept(entry, channel, packet);
          else if (!entry.e2e.receive(packet, channel.path)) {
            metrics.channelPackets.inc({ outcome: "rejected" });
          }
          return;
        default:
          metrics.channelPackets.inc({ outcome: "malformed" });
      }
    },
    relayDown(relay) {
      for (const channel of [...channels.get(relay)?.values() ?? []]) dropChannel(channel);
      channels.delete(relay);
    },
    grantOf(session) {
      const entry = byFlows.get(session);
      return entry === undefined ? undefined : { agent: entry.agent, services: entry.services };
    },
    count: () => byFlows.size,
    closeAll(code, reason) {
      for (const entry of entries.values()) entry.e2e?.conn.close(code, reason);
    },
  };
}
