/**
 * A UDP impairment proxy for fault tests: the portable stand-in for `tc netem` (not available
 * on these machines). It sits between a QUIC client (agent, connector) and the relay — the
 * client's config simply names the proxy's address — and forwards datagrams both ways while
 * dropping, delaying (with jitter), duplicating, reordering and corrupting them at seeded,
 * configurable rates. It can also black-hole the path for a while.
 *
 * Each client source address gets its own upstream socket, so the server sees one peer per
 * client and its answers find their way back. Loopback only; nothing here is product code.
 *
 * @module
 */
import { seededRandom } from "../../shared/protocol/_test_utils.ts";

export { seededRandom };

/** How one direction of the path misbehaves. Rates are probabilities in [0, 1]. */
export interface Impairment {
  /**
   * Share of datagrams dropped.
   * @default {0}
   */
  loss?: number;
  /**
   * Fixed one-way delay in milliseconds.
   * @default {0}
   */
  delayMs?: number;
  /**
   * Extra random delay, uniform in [0, jitterMs) per datagram; datagrams overtake each
   * other when it exceeds their spacing.
   * @default {0}
   */
  jitterMs?: number;
  /**
   * Share of datagrams sent twice (the copy gets its own delay).
   * @default {0}
   */
  duplicate?: number;
  /**
   * Share of datagrams held back by `reorderDelayMs` so later ones overtake them.
   * @default {0}
   */
  reorder?: number;
  /**
   * Hold-back of a reordered datagram.
   * @default {jitterMs + 10}
   */
  reorderDelayMs?: number;
  /**
   * Share of datagrams with one random byte flipped (a copy; the sender's bytes stay as
   * they are).
   * @default {0}
   */
  corrupt?: number;
}

/** What {@linkcode planDatagram} decided for one datagram. */
export interface DatagramPlan {
  /** Copies to send, each after its own delay (empty when the datagram is dropped). */
  copies: { delayMs: number; corruptAt: number | null }[];
  dropped: boolean;
  duplicated: boolean;
  reordered: boolean;
  corrupted: boolean;
}

/** Throws a RangeError unless every rate is in [0, 1] and every time is non-negative. */
export function validateImpairment(impairment: Impairment): void {
  for (const name of ["loss", "duplicate", "reorder", "corrupt"] as const) {
    const value = impairment[name];
    if (value !== undefined && !(value >= 0 && value <= 1)) {
      throw new RangeError(
        `Cannot impair path as '${name}' must be a rate in [0, 1]: current value is ${value}`,
      );
    }
  }
  for (const name of ["delayMs", "jitterMs", "reorderDelayMs"] as const) {
    const value = impairment[name];
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
      throw new RangeError(
        `Cannot impair path as '${name}' must be a non-negative number: current value is ${value}`,
      );
    }
  }
}

/**
 * Decides the fate of one datagram of `length` bytes: pure apart from `random`, so a seed
 * makes a whole run reproducible.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { planDatagram, seededRandom } from "./impair_proxy.ts";
 * const plan = planDatagram({ loss: 1 }, 100, seededRandom(1));
 * assert.equal(plan.dropped, true);
 * assert.equal(plan.copies.length, 0);
 * ```
 */
export function planDatagram(
  impairment: Impairment,
  length: number,
  random: () => number,
): DatagramPlan {
  const {
    loss = 0,
    delayMs = 0,
    jitterMs = 0,
    duplicate = 0,
    reorder = 0,
    reorderDelayMs = jitterMs + 10,
    corrupt = 0,
  } = impairment;
  const plan: DatagramPlan = {
    copies: [],
    dropped: false,
    duplicated: false,
    reordered: false,
    corrupted: false,
  };
  if (loss > 0 && random() < loss) {
    plan.dropped = true;
    return plan;
  }
  const delay = () => delayMs + (jitterMs > 0 ? random() * jitterMs : 0);
  let first = delay();
  if (reorder > 0 && random() < reorder) {
    plan.reordered = true;
    first += reorderDelayMs;
  }
  let corruptAt: number | null = null;
  if (corrupt > 0 && length > 0 && random() < corrupt) {
    plan.corrupted = true;
    corruptAt = Math.floor(random() * length);
  }
  plan.copies.push({ delayMs: first, corruptAt });
  if (duplicate > 0 && random() < duplicate) {
    plan.duplicated = true;
    plan.copies.push({ delayMs: delay(), corruptAt: null });
  }
  return plan;
}

/** Counters of one direction. */
export interface DirectionStats {
  received: number;
  forwarded: number;
  dropped: number;
  blackholed: number;
  duplicated: number;
  reordered: number;
  corrupted: number;
}

/** Options for {@linkcode startImpairProxy}. */
export interface ImpairProxyOptions {
  /** Where datagrams from clients go (the real server). */
  target: { host: string; port: number };
  /**
   * Address clients send to.
   * @default {"127.0.0.1"}
   */
  listenHost?: string;
  /**
   * Port clients send to; 0 picks an ephemeral one.
   * @default {0}
   */
  listenPort?: number;
  /**
   * Seed of the random decisions.
   * @default {1}
   */
  seed?: number;
  /** Impairment of client → server datagrams. */
  upstream?: Impairment;
  /** Impairment of server → client datagrams. */
  downstream?: Impairment;
  /**
   * Client addresses tracked at once; the oldest is forgotten beyond it.
   * @default {2048}
   */
  maxClients?: number;
  /** Sees every datagram as it arrives, before any impairment (a capture). */
  tap?: (direction: "upstream" | "downstream", data: Uint8Array) => void;
}

/** A running proxy. */
export interface ImpairProxy {
  /** `host:port` clients send to. */
  readonly address: string;
  readonly port: number;
  /** Replaces the impairment of one or both directions (takes effect at once). */
  impair(impairment: { upstream?: Impairment; downstream?: Impairment }): void;
  /** Drops every datagram both ways for `ms` (0 ends a black-hole at once). */
  blackhole(ms: number): void;
  /** True while black-holing. */
  readonly blackholed: boolean;
  /** Counters per direction (a snapshot). */
  stats(): { upstream: DirectionStats; downstream: DirectionStats };
  /** Stops forwarding, cancels pending delayed datagrams and closes every socket. */
  close(): Promise<void>;
}

const emptyStats = (): DirectionStats => ({
  received: 0,
  forwarded: 0,
  dropped: 0,
  blackholed: 0,
  duplicated: 0,
  reordered: 0,
  corrupted: 0,
});

/**
 * Starts a proxy forwarding between clients on `listenHost:listenPort` and `target`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { startImpairProxy } from "./impair_proxy.ts";
 *
 * const proxy = startImpairProxy({
 *   target: { host: "127.0.0.1", port: 4433 }, // the relay
 *   upstream: { loss: 0.05, jitterMs: 30, reorder: 0.02 },
 *   downstream: { loss: 0.05, jitterMs: 30, reorder: 0.02 },
 * });
 * // Point the agent's `relays` at proxy.address, then cut the path for 10 s:
 * proxy.blackhole(10_000);
 * assert.equal(proxy.blackholed, true);
 * await proxy.close();
 * ```
 */
export function startImpairProxy(options: ImpairProxyOptions): ImpairProxy {
  const {
    target,
    listenHost = "127.0.0.1",
    listenPort = 0,
    seed = 1,
    maxClients = 2048,
  } = options;
  let upstream: Impairment = options.upstream ?? {};
  let downstream: Impairment = options.downstream ?? {};
  validateImpairment(upstream);
  validateImpairment(downstream);
  const random = seededRandom(seed);
  const counters = { upstream: emptyStats(), downstream: emptyStats() };
  let blackholeUntil = 0;
  let open = true;
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const targetAddr: Deno.NetAddr = { transport: "udp", hostname: target.host, port: target.port };

  const front = Deno.listenDatagram({ transport: "udp", hostname: listenHost, port: listenPort });
  const frontAddr = front.addr as Deno.NetAddr;
  /** Upstream socket per client address. */
  const clients = new Map<
    string,
    { socket: Deno.DatagramConn; loop: Promise<void>; send: (bytes: Uint8Array) => void }
  >();
  const upstreamHost = target.host.includes(":") ? "::1" : "127.0.0.1";

  /**
   * Sends in order: Deno starts concurrent `send()` calls last-first, so a burst handed over
   * without waiting would leave reversed. Every socket gets one queue drained by one loop.
   */
  function orderedSender(socket: Deno.DatagramConn, to: Deno.NetAddr) {
    const queue: Uint8Array[] = [];
    let busy = false;
    const pump = async () => {
      busy = true;
      while (queue.length > 0 && open) {
        await socket.send(queue.shift()!, to).catch(() => {});
      }
      busy = false;
    };
    return (bytes: Uint8Array) => {
      queue.push(bytes);
      if (!busy) pump();
    };
  }

  function forward(
    data: Uint8Array,
    impairment: Impairment,
    stats: DirectionStats,
    send: (bytes: Uint8Array) => void,
  ): void {
    stats.received++;
    options.tap?.(stats === counters.upstream ? "upstream" : "downstream", data);
    if (performance.now() < blackholeUntil) {
      stats.blackholed++;
      return;
    }
    const plan = planDatagram(impairment, data.length, random);
    if (plan.dropped) {
      stats.dropped++;
      return;
    }
    if (plan.duplicated) stats.duplicated++;
    if (plan.reordered) stats.reordered++;
    if (plan.corrupted) stats.corrupted++;
    for (const copy of plan.copies) {
      const bytes = data.slice();
      if (copy.corruptAt !== null) bytes[copy.corruptAt] ^= 0xff;
      const go = () => {
        if (!open) return;
        // A black-hole also swallows what was already in flight when it began.
        if (performance.now() < blackholeUntil) {
          stats.blackholed++;
          return;
        }
        stats.forwarded++;
        send(bytes);
      };
      if (copy.delayMs <= 0) go();
      else {
        const timer = setTimeout(() => {
          timers.delete(timer);
          go();
        }, copy.delayMs);
        timers.add(timer);
      }
    }
  }

  function clientFor(from: Deno.NetAddr): (bytes: Uint8Array) => void {
    const key = `${from.hostname}|${from.port}`;
    const known = clients.get(key);
    if (known !== undefined) return known.send;
    if (clients.size >= maxClients) {
      const [oldest, entry] = clients.entries().next().value!;
      clients.delete(oldest);
      entry.socket.close();
    }
    const socket = Deno.listenDatagram({ transport: "udp", hostname: upstreamHost, port: 0 });
    const back = orderedSender(front, {
      transport: "udp",
      hostname: from.hostname,
      port: from.port,
    });
    const loop = (async () => {
      const buffer = new Uint8Array(65_536);
      try {
        for (;;) {
          const [data] = await socket.receive(buffer);
          forward(data, downstream, counters.downstream, back);
        }
      } catch {
        // Socket closed.
      }
    })();
    const send = orderedSender(socket, targetAddr);
    clients.set(key, { socket, loop, send });
    return send;
  }

  const frontLoop = (async () => {
    const buffer = new Uint8Array(65_536);
    try {
      for (;;) {
        const [data, from] = await front.receive(buffer);
        forward(data, upstream, counters.upstream, clientFor(from as Deno.NetAddr));
      }
    } catch {
      // Socket closed.
    }
  })();

  const host = frontAddr.hostname.includes(":") ? `[${frontAddr.hostname}]` : frontAddr.hostname;
  return {
    address: `${host}:${frontAddr.port}`,
    port: frontAddr.port,
    impair(next) {
      if (next.upstream) validateImpairment(next.upstream);
      if (next.downstream) validateImpairment(next.downstream);
      if (next.upstream) upstream = next.upstream;
      if (next.downstream) downstream = next.downstream;
    },
    blackhole(ms) {
      blackholeUntil = ms > 0 ? performance.now() + ms : 0;
    },
    get blackholed() {
      return performance.now() < blackholeUntil;
    },
    stats: () => ({ upstream: { ...counters.upstream }, downstream: { ...counters.downstream } }),
    async close() {
      if (!open) return;
      open = false;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      front.close();
      for (const { socket } of clients.values()) socket.close();
      await Promise.all([frontLoop, ...[...clients.values()].map((c) => c.loop)]);
      clients.clear();
    },
  };
}
