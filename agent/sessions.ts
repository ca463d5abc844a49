/**
 * The agent's end-to-end sessions (docs/PROTOCOL.md §7): one QUIC session per connector it
 * reaches, carried by a channel of the relay it is connected to, and moved to a channel of
 * the next relay when that relay drains, fails or stops answering path keepalives. Flows
 * never see a move: they belong to the session, not to the relay.
 *
 * @module
 */
import type { Logger } from "../shared/log.ts";
import {
  type ControlMessage,
  type RefusedReason,
  SESSION_GONE,
} from "../shared/protocol/control.ts";
import {
  CHANNEL_HEADER_BYTES,
  ChannelPacketType,
  readChannelId,
} from "../shared/protocol/channel_packet.ts";
import { carryFlows, type FlowSession, type FlowSessionHandlers } from "../shared/flow_session.ts";
import {
  type E2eSession,
  openE2eSession,
  type PathSwitchCause,
  type SessionPath,
} from "../shared/quic/e2e_session.ts";
import { CloseCode, type HandlerErrorReporter, type TlsMaterial } from "../shared/quic/mod.ts";
import type { RelaySession } from "../shared/relay_link.ts";
import type { EdgeMetrics } from "../shared/ops/edge_metrics.ts";

/** Options for {@linkcode createAgentSessions}. */
export interface AgentSessionsOptions {
  /** Our client certificate and the CA the connector's certificate chains to. */
  tls(): TlsMaterial;
  /** Idle timeout of each session. */
  idleTimeoutMs: number;
  /** A relay or connector that has not completed a session open in this time is given up. */
  openTimeoutMs: number;
  /** The flows each established session carries. */
  handlers: FlowSessionHandlers;
  /** The relay refused a session for `service`: flows waiting for it are refused. */
  onRefused(service: string, reason: RefusedReason, message: string): void;
  onHandlerError?: HandlerErrorReporter;
  logger: Logger;
  metrics: EdgeMetrics;
}

/** Whether a service can carry flows now. */
export type SessionState = FlowSession | "opening" | "no_relay";

/** The agent's sessions; the relay link routes session signalling and channel packets here. */
export interface AgentSessions {
  /**
   * The established session that carries `service`, or why there is none: `opening` (one is
   * being opened; `onUp` follows) or `no_relay` (no relay connection to ask through).
   */
  sessionFor(service: string, traceparent?: string): SessionState;
  /** A relay connection came up: sessions carried elsewhere move to it. */
  relayUp(relay: RelaySession): void;
  /** The relay connection ended (`cause`: why, for the path switch it leads to). */
  relayDown(relay: RelaySession, cause: PathSwitchCause): void;
  /** A relay control message; true when it was about sessions (handled here). */
  message(relay: RelaySession, message: ControlMessage): boolean;
  /** A channel packet from `relay` (valid only during the call). */
  packet(relay: RelaySession, packet: Uint8Array): void;
  /** The connector of `session` drains: its flows run on, new ones go elsewhere. */
  retire(session: FlowSession): void;
  /** Live state for `/health`. */
  health(): Record<string, unknown>[];
  /** Closes every session (drain). */
  closeAll(code: number, reason: string): void;
}

interface Entry {
  /** Session id (32 hex), the same through every relay. */
  id: string;
  connector: string;
  instance: string;
  services: Set<string>;
  e2e: E2eSession;
  flows: FlowSession;
  up: boolean;
  /** The connector drains: no new flows here. */
  retired: boolean;
  /** The relay connection of the current path, if any. */
  relay: RelaySession | null;
  /** A move in progress (its request id), so that a dead path asks only once. */
  moving: number;
}

interface Request {
  service: string;
  /** The session id asked for. */
  session: string;
  /** Set when the request moves this existing session to the current relay. */
  entry?: Entry;
  cause: PathSwitchCause;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Creates the agent's session table.
 *
 * @example
 * ```ts ignore
 * const sessions = createAgentSessions({ tls: () => tls, handlers, onRefused, ... });
 * const state = sessions.sessionFor("db"); // "opening" at first, then the session
 * ```
 */
export function createAgentSessions(options: AgentSessionsOptions): AgentSessions {
  const { logger, metrics, handlers } = options;
  const entries = new Set<Entry>();
  const requests = new Map<number, Request>();
  /** Services with an open in progress. */
  const opening = new Set<string>();
  /** Channel ids on the current relay → the session they carry. */
  const channels = new Map<number, { entry: Entry; path: SessionPath }>();
  let relay: RelaySession | null = null;
  /** Why the last relay connection ended: the cause of the moves to the next one. */
  let lostCause: PathSwitchCause = "relay_closed";
  let nextRequest = 1;

  function request(
    service: string,
    cause: PathSwitchCause,
    entry?: Entry,
    traceparent?: string,
  ): void {
    if (relay === null) return;
    const id = nextRequest++;
    const via = relay;
    const session = entry?.id ?? crypto.randomUUID().replaceAll("-", "");
    const pending: Request = {
      service,
      session,
      entry,
      cause,
      timer: setTimeout(() =>
        via.conn.guard("session open timeout", () => {
          if (!requests.delete(id)) return;
          answerRefused(pending, "unavailable", "no answer in time");
        }), options.openTimeoutMs),
    };
    requests.set(id, pending);
    if (entry === undefined) opening.add(service);
    else entry.moving = id;
    relay.send({
      type: "session_open",
      id,
      service,
      session,
      ...(entry === undefined ? {} : { connector: entry.instance }),
      ...(traceparent === undefined ? {} : { traceparent }),
    });
  }

  function answerRefused(
    pending: Request,
    reason: RefusedReason,
    message: string,
  ): void {
    const { entry, service } = pending;
    if (entry === undefined) {
      opening.delete(service);
      metrics.sessionRefusals.inc({ reason: "refused_by_relay" });
      options.onRefused(service, reason, message);
      return;
    }
    entry.moving = 0;
    // The connector is not reachable through this relay (or no longer allowed): the
    // session cannot carry on, and its flows end with it.
    logger.warn("end-to-end session cannot move", {
      connector: entry.connector,
      relay: relay?.relay,
      reason,
      message,
    });
    entry.e2e.conn.close(CloseCode.GOING_AWAY, `cannot move: ${reason}`);
  }

  function opened(id: number, message: ControlMessage & { type: "session_opened" }): void {
    const pending = requests.get(id);
    if (pending === undefined || relay === null) return;
    requests.delete(id);
    clearTimeout(pending.timer);
    const path: SessionPath = {
      label: relay.relay,
      socket: relay.socket,
      target: relay.target,
      channel: message.channel,
    };
    if (pending.entry !== undefined) {
      const entry = pending.entry;
      entry.moving = 0;
      if (entry.connector !== message.connector || entry.e2e.conn.closed) return;
      entry.services = new Set(message.services);
      entry.relay = relay;
      channels.set(message.channel, { entry, path });
      entry.e2e.setPath(path, pending.cause);
      return;
    }
    opening.delete(pending.service);
    start(message, path, pending.session);
  }

  function start(
    message: ControlMessage & { type: "session_opened" },
    path: SessionPath,
    id: string,
  ): void {
    const entry = { up: false, retired: false, moving: 0, relay } as Entry;
    const carried = carryFlows(
      (hooks) =>
        openE2eSession({
          ...hooks,
          tls: options.tls(),
          expectedPeer: message.connector,
          path,
          idleTimeoutMs: options.idleTimeoutMs,
          onHandlerError: options.onHandlerError,
          onPathDead: () => pathDead(entry),
        }),
      {
        ...handlers,
        onUp(flows) {
          entry.up = true;
          handlers.onUp(flows);
        },
        onDown(flows, reason, up) {
          entries.delete(entry);
          for (const [id, carried] of [...channels]) {
            if (carried.entry !== entry) continue;
            channels.delete(id);
            // The relay frees the channel (and records its totals) now, not when we leave.
            relay?.send({ type: "channel_closed", channel: id, reason: "session ended" });
          }
          handlers.onDown(flows, reason, up);
        },
      },
      {
        metrics,
        logger,
        peer: { role: "connector", identity: message.connector },
        handshakeTimeoutMs: options.openTimeoutMs,
        // What waited for this session is refused now, not at its hold's end.
        onFailed(reason, refusal) {
          for (const service of message.services) options.onRefused(service, refusal, reason);
        },
      },
    )!;
    Object.assign(entry, {
      id,
      connector: message.connector,
      instance: message.instance,
      services: new Set(message.services),
      e2e: carried.e2e,
      flows: carried.flows,
    });
    entries.add(entry);
    channels.set(message.channel, { entry, path });
  }

  /**
   * The relay carrying `entry` stopped answering keepalives. If we are still connected to
   * it, the link moves on (the next relay's `relayUp` moves every session); if we already
   * are elsewhere, the session moves there now.
   */
  function pathDead(entry: Entry): void {
    if (relay !== null && entry.relay === relay) {
      logger.warn("relay stopped answering path keepalives; moving to the next relay", {
        relay: relay.relay,
      });
      relay.moveOn("path keepalives unanswered");
      return;
    }
    if (relay !== null && entry.moving === 0) move(entry, "dead");
  }

  function move(entry: Entry, cause: PathSwitchCause): void {
    const service = [...entry.services][0];
    if (service === undefined) return;
    request(service, cause, entry);
  }

  return {
    sessionFor(service, traceparent) {
      for (const entry of entries) {
        if (entry.up && !entry.retired && entry.services.has(service)) return entry.flows;
      }
      if (relay === null) return "no_relay";
      for (const entry of entries) if (!entry.up && entry.services.has(service)) return "opening";
      if (!opening.has(service)) request(service, "opened", undefined, traceparent);
      return "opening";
    },
    relayUp(up) {
      relay = up;
      for (const entry of entries) {
        if (entry.relay !== up) move(entry, lostCause);
      }
    },
    relayDown(down, cause) {
      if (relay === down) relay = null;
      lostCause = cause;
      channels.clear();
      for (const [id, pending] of [...requests]) {
        clearTimeout(pending.timer);
        requests.delete(id);
        if (pending.entry === undefined) opening.delete(pending.service);
        else pending.entry.moving = 0;
      }
      for (const entry of entries) {
        if (entry.relay !== down) continue;
        entry.relay = null;
        // Its socket is closed: what the session sends waits (QUIC resends) for the next path.
        entry.e2e.setPath(null, cause);
      }
    },
    message(from, message) {
      switch (message.type) {
        case "session_opened":
          if (from === relay) opened(message.id, message);
          return true;
        case "refused": {
          const pending = requests.get(message.id);
          if (pending === undefined || from !== relay) return true;
          requests.delete(message.id);
          clearTimeout(pending.timer);
          answerRefused(pending, message.reason, message.message);
          return true;
        }
        case "channel_closed": {
          const carried = channels.get(message.channel);
          if (carried === undefined || from !== relay) return true;
          channels.delete(message.channel);
          const { entry } = carried;
          // The connector no longer has this session: it cannot move; it ends.
          if (message.reason === SESSION_GONE) {
            entry.e2e.conn.close(CloseCode.GOING_AWAY, "connector lost the session");
            return true;
          }
          // The relay took the channel away (policy, or the connector left it): ask again
          // once; a refusal then ends the session.
          if (entry.e2e.path === carried.path && entry.moving === 0) move(entry, "relay_closed");
          return true;
        }
        default:
          return false;
      }
    },
    packet(from, packet) {
      if (from !== relay || packet.length <= CHANNEL_HEADER_BYTES) {
        metrics.channelPackets.inc({ outcome: "malformed" });
        return;
      }
      const carried = channels.get(readChannelId(packet));
      if (carried === undefined) {
        metrics.channelPackets.inc({ outcome: "unknown_channel" });
        return;
      }
      if (packet[0] === ChannelPacketType.PONG) carried.entry.e2e.pong(packet, carried.path);
      else if (packet[0] === ChannelPacketType.DATA) {
        if (!carried.entry.e2e.receive(packet, carried.path)) {
          metrics.channelPackets.inc({ outcome: "rejected" });
        }
      } else metrics.channelPackets.inc({ outcome: "malformed" });
    },
    retire(session) {
      for (const entry of entries) {
        if (entry.flows !== session || entry.retired) continue;
        entry.retired = true;
        logger.info("connector draining: new flows go to another", { connector: entry.connector });
      }
    },
    health: () =>
      [...entries].map((entry) => ({
        connector: entry.connector,
        services: [...entry.services],
        up: entry.up,
        path: entry.e2e.path?.label ?? null,
      })),
    closeAll(code, reason) {
      for (const entry of entries) entry.e2e.conn.close(code, reason);
    },
  };
}
