/**
 * The relay's registry of services: which connector sessions currently serve each
 * service and protocol, and which one takes the next flow.
 *
 * @module
 */
import type { ServiceProtocol } from "../shared/protocol/control.ts";

/** Registry of live service offers, generic over the session type. */
export interface ServiceRegistry<S> {
  /** Adds an offer; returns true when it is the service's first connector (service up). */
  add(service: string, protocol: ServiceProtocol, session: S): boolean;
  /** Removes an offer; returns true when the service has no connector left (service down). */
  remove(service: string, protocol: ServiceProtocol, session: S): boolean;
  /** Removes every offer of `session`; returns the services that went down. */
  removeSession(session: S): string[];
  /** Picks the connector for a new flow (round robin), or undefined when none serves it. */
  pick(service: string, protocol: ServiceProtocol, usable?: (session: S) => boolean): S | undefined;
  /** Distinct connector sessions serving `service` (any protocol). */
  connectors(service: string): number;
  /** True when some connector serves `service` with any protocol. */
  has(service: string): boolean;
  /** Number of services with at least one connector. */
  readonly size: number;
  /** Names of the services with at least one connector. */
  services(): string[];
}

/**
 * Creates an empty registry.
 *
 * @example
 * ```ts
 * import { createServiceRegistry } from "./registry.ts";
 * const registry = createServiceRegistry<string>();
 * registry.add("echo", "udp", "c1");
 * registry.add("echo", "udp", "c2");
 * if (registry.pick("echo", "udp") === registry.pick("echo", "udp")) throw new Error("no spread");
 * ```
 */
export function createServiceRegistry<S>(): ServiceRegistry<S> {
  // service -> protocol -> sessions in registration order, plus a round-robin cursor.
  const offers = new Map<string, Map<ServiceProtocol, { sessions: S[]; next: number }>>();

  const count = (service: string): number => {
    let n = 0;
    for (const entry of offers.get(service)?.values() ?? []) n += entry.sessions.length;
    return n;
  };

  const registry: ServiceRegistry<S> = {
    add(service, protocol, session) {
      const wasUp = count(service) > 0;
      let byProtocol = offers.get(service);
      if (byProtocol === undefined) offers.set(service, byProtocol = new Map());
      let entry = byProtocol.get(protocol);
      if (entry === undefined) byProtocol.set(protocol, entry = { sessions: [], next: 0 });
      if (!entry.sessions.includes(session)) entry.sessions.push(session);
      return !wasUp;
    },
    remove(service, protocol, session) {
      const entry = offers.get(service)?.get(protocol);
      if (entry === undefined) return false;
      const index = entry.sessions.indexOf(session);
      if (index < 0) return false;
      entry.sessions.splice(index, 1);
      if (entry.sessions.length === 0) offers.get(service)!.delete(protocol);
      if (offers.get(service)!.size === 0) {
        offers.delete(service);
        return true;
      }
      return false;
    },
    removeSession(session) {
      const down: string[] = [];
      for (const [service, byProtocol] of [...offers]) {
        for (const protocol of [...byProtocol.keys()]) {
          if (registry.remove(service, protocol, session) && !down.includes(service)) {
            down.push(service);
          }
        }
      }
      return down;
    },
    pick(service, protocol, usable = () => true) {
      const entry = offers.get(service)?.get(protocol);
      if (entry === undefined) return undefined;
      for (let i = 0; i < entry.sessions.length; i++) {
        const session = entry.sessions[entry.next % entry.sessions.length];
        entry.next = (entry.next + 1) % entry.sessions.length;
        if (usable(session)) return session;
      }
      return undefined;
    },
    connectors(service) {
      const sessions = new Set<S>();
      for (const entry of offers.get(service)?.values() ?? []) {
        for (const session of entry.sessions) sessions.add(session);
      }
      return sessions.size;
    },
    has: (service) => offers.has(service),
    get size() {
      return offers.size;
    },
    services: () => [...offers.keys()],
  };
  return registry;
}
