/**
 * Tells agents when a service they may use goes down or comes back (`service_down` /
 * `service_up`), coalesced: each agent hears the net change, at most once per interval per
 * service. A connector flipping its registration cannot make the relay send more than that:
 * without coalescing, 770 register/deregister frames from one connector made 15,400
 * announcements to 20 agents.
 *
 * Agents assume a service is up until told otherwise, so only a change from what an agent
 * was last told goes out.
 *
 * @module
 */

/** What an announcer sends. */
export type Announcement = "service_up" | "service_down";

/** Options for {@linkcode createAnnouncer}. */
export interface AnnouncerOptions<A> {
  /** The agents to consider (read at each flush). */
  agents: () => Iterable<A>;
  /** True when `service` is reachable for `agent` now (allowed and served). */
  visible: (agent: A, service: string) => boolean;
  /** Sends one announcement; must not throw (a failed send is the channel's business). */
  tell: (agent: A, type: Announcement, service: string) => void;
  /**
   * Least time between two flushes of one service.
   * @default {1000}
   */
  intervalMs?: number;
  /** Clock in milliseconds; injectable for tests. @default {performance.now} */
  now?: () => number;
  /** Timer; injectable for tests. @default {setTimeout} */
  schedule?: (fn: () => void, ms: number) => unknown;
}

/** A running announcer. */
export interface Announcer<A> {
  /** The service's availability may have changed: agents hear about it soon. */
  changed(service: string): void;
  /** Tells every agent the current state of each of `services` now (a policy reload). */
  flushNow(services: Iterable<string>): void;
  /** Forgets an agent that disconnected. */
  forget(agent: A): void;
}

/**
 * Creates an announcer.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createAnnouncer } from "./announcer.ts";
 *
 * const sent: string[] = [];
 * let up = false;
 * let t = 0;
 * const timers: (() => void)[] = [];
 * const a1 = { name: "a1" };
 * const announcer = createAnnouncer({
 *   agents: () => [a1],
 *   visible: () => up,
 *   tell: (agent, type, service) => sent.push(`${agent.name} ${type} ${service}`),
 *   now: () => t,
 *   schedule: (fn) => timers.push(fn),
 * });
 * announcer.changed("echo");
 * timers.shift()!();
 * assert.deepEqual(sent, ["a1 service_down echo"]);
 * up = true;
 * for (let i = 0; i < 100; i++) announcer.changed("echo"); // flips within one interval
 * t = 1000;
 * timers.shift()!();
 * assert.deepEqual(sent, ["a1 service_down echo", "a1 service_up echo"]);
 * ```
 */
export function createAnnouncer<A extends object>(options: AnnouncerOptions<A>): Announcer<A> {
  const {
    agents,
    visible,
    tell,
    intervalMs = 1000,
    now = () => performance.now(),
    schedule = setTimeout,
  } = options;
  /** Services each agent was last told are down. */
  const toldDown = new WeakMap<A, Set<string>>();
  /** When each service was last flushed. */
  const flushedAt = new Map<string, number>();
  const scheduled = new Set<string>();

  function flush(service: string): void {
    scheduled.delete(service);
    flushedAt.set(service, now());
    for (const agent of agents()) {
      let down = toldDown.get(agent);
      const isVisible = visible(agent, service);
      const wasDown = down?.has(service) ?? false;
      if (isVisible === !wasDown) continue;
      if (!isVisible) {
        if (down === undefined) toldDown.set(agent, down = new Set());
        down.add(service);
        tell(agent, "service_down", service);
      } else {
        down!.delete(service);
        tell(agent, "service_up", service);
      }
    }
  }

  return {
    changed(service) {
      if (scheduled.has(service)) return;
      scheduled.add(service);
      const last = flushedAt.get(service) ?? -Infinity;
      schedule(() => flush(service), Math.max(0, last + intervalMs - now()));
    },
    flushNow(services) {
      for (const service of services) flush(service);
    },
    forget(agent) {
      toldDown.delete(agent);
    },
  };
}
