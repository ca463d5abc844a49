/**
 * A connector's links to every relay of its pool. A configured relay given by name may stand
 * for several relays (a Kubernetes headless Service, DNS round robin): each address it
 * resolves to gets its own link, and the names are re-resolved periodically so relays that
 * come and go are joined and left.
 *
 * @module
 */
import { sleep } from "./backoff.ts";
import { formatHostPort, type HostPort } from "./config/address.ts";
import type { Logger } from "./log.ts";
import { resolveAll } from "./resolve_host.ts";

/** Options for {@linkcode runRelayPool}. */
export interface RelayPoolOptions {
  /** Relays as configured (IP literals or names). */
  relays: HostPort[];
  /**
   * How often names are resolved again.
   * @default {30000}
   */
  resolveIntervalMs?: number;
  /** Stops every link; the pool resolves once all have ended. */
  signal: AbortSignal;
  logger: Logger;
  /** Runs one link to `address` until `signal` aborts. */
  startLink: (address: HostPort, signal: AbortSignal) => Promise<void>;
  /** Resolver; injectable for tests. */
  resolve?: (host: string) => Promise<string[]>;
}

/** Keeps one link per resolved relay address until `signal` aborts. */
export async function runRelayPool(options: RelayPoolOptions): Promise<void> {
  const { relays, resolveIntervalMs = 30_000, signal, logger, startLink } = options;
  const resolve = options.resolve ?? resolveAll;
  const links = new Map<string, { stop: AbortController; done: Promise<void> }>();
  // What each configured relay resolved to last time: kept when a lookup fails, so a DNS
  // hiccup never tears down working links.
  const known = new Map<string, HostPort[]>();

  while (!signal.aborted) {
    for (const relay of relays) {
      const key = formatHostPort(relay);
      try {
        const addresses = await resolve(relay.host);
        known.set(key, addresses.map((host) => ({ host, port: relay.port })));
      } catch (error) {
        logger.warn("cannot resolve relay; keeping its current links", { relay: key, error });
      }
    }
    if (signal.aborted) break;
    const wanted = new Map<string, HostPort>();
    for (const addresses of known.values()) {
      for (const address of addresses) wanted.set(formatHostPort(address), address);
    }
    for (const [key, link] of links) {
      if (wanted.has(key)) continue;
      logger.info("relay address gone from the pool", { relay: key });
      link.stop.abort();
      links.delete(key);
    }
    for (const [key, address] of wanted) {
      if (links.has(key)) continue;
      const stop = new AbortController();
      links.set(key, { stop, done: startLink(address, stop.signal) });
    }
    if (!await sleep(resolveIntervalMs, signal)) break;
  }
  for (const link of links.values()) link.stop.abort();
  await Promise.all([...links.values()].map((link) => link.done));
}
