/**
 * Per-source-IP handshake rate limit: a token bucket per address, bounded in memory.
 *
 * @module
 */

/** Options for {@linkcode createHandshakeLimiter}. */
export interface HandshakeLimiterOptions {
  /** Sustained handshakes per second allowed per source IP (also the burst size). */
  perSecond: number;
  /**
   * Source addresses tracked at once; the least recently seen are forgotten beyond it.
   * @default {65536}
   */
  maxSources?: number;
  /** Clock in milliseconds; injectable for tests. */
  now?: () => number;
}

/**
 * Returns `admit(ip)`: true when a new handshake from `ip` is within its budget.
 *
 * @example
 * ```ts
 * import { createHandshakeLimiter } from "./handshake_limiter.ts";
 * const admit = createHandshakeLimiter({ perSecond: 2, now: () => 0 });
 * if (!admit("10.0.0.1") || !admit("10.0.0.1") || admit("10.0.0.1")) throw new Error();
 * ```
 */
export function createHandshakeLimiter(options: HandshakeLimiterOptions): (ip: string) => boolean {
  const { perSecond, maxSources = 65_536, now = () => performance.now() } = options;
  if (!Number.isFinite(perSecond) || perSecond <= 0) {
    throw new RangeError(
      `Cannot create handshake limiter as 'perSecond' must be a positive number: current value is ${perSecond}`,
    );
  }
  const buckets = new Map<string, { tokens: number; at: number }>();
  return (ip) => {
    const t = now();
    let bucket = buckets.get(ip);
    if (bucket === undefined) {
      bucket = { tokens: perSecond, at: t };
      if (buckets.size >= maxSources) buckets.delete(buckets.keys().next().value!);
    } else {
      buckets.delete(ip); // re-inserted below: Map order is then least recently seen first
      bucket.tokens = Math.min(perSecond, bucket.tokens + ((t - bucket.at) / 1000) * perSecond);
      bucket.at = t;
    }
    buckets.set(ip, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  };
}
