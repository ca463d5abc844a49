/**
 * Handshake admission: a token bucket per source IP (bounded in memory) and one for the
 * whole relay, so neither one address nor many together can monopolise handshake CPU.
 *
 * @module
 */
import { createTokenBucket } from "../shared/token_bucket.ts";

/** Options for {@linkcode createHandshakeLimiter}. */
export interface HandshakeLimiterOptions {
  /** Sustained handshakes per second allowed per source IP (also the burst size). */
  perSecond: number;
  /**
   * Sustained handshakes per second for the whole relay (also the burst size).
   * @default {Infinity}
   */
  totalPerSecond?: number;
  /**
   * Source addresses tracked at once; the least recently seen are forgotten beyond it.
   * @default {65536}
   */
  maxSources?: number;
  /** Clock in milliseconds; injectable for tests. */
  now?: () => number;
}

/** Why a handshake was not admitted. */
export type HandshakeRefusal = "source" | "total";

/**
 * Returns `admit(ip)`: null when a new handshake from `ip` is within both budgets, else
 * which budget it exceeded.
 *
 * @example
 * ```ts
 * import { createHandshakeLimiter } from "./handshake_limiter.ts";
 * const admit = createHandshakeLimiter({ perSecond: 2, now: () => 0 });
 * if (admit("10.0.0.1") !== null || admit("10.0.0.1") !== null) throw new Error();
 * if (admit("10.0.0.1") !== "source") throw new Error();
 * ```
 */
export function createHandshakeLimiter(
  options: HandshakeLimiterOptions,
): (ip: string) => HandshakeRefusal | null {
  const { perSecond, totalPerSecond = Infinity, maxSources = 65_536, now } = options;
  if (!Number.isFinite(perSecond) || perSecond <= 0) {
    throw new RangeError(
      `Cannot create handshake limiter as 'perSecond' must be a positive number: current value is ${perSecond}`,
    );
  }
  const total = Number.isFinite(totalPerSecond)
    ? createTokenBucket({ perSecond: totalPerSecond, now })
    : () => true;
  const sources = new Map<string, () => boolean>();
  return (ip) => {
    let take = sources.get(ip);
    if (take === undefined) {
      take = createTokenBucket({ perSecond, now });
      if (sources.size >= maxSources) sources.delete(sources.keys().next().value!);
    } else {
      sources.delete(ip); // re-inserted below: Map order is then least recently seen first
    }
    sources.set(ip, take);
    if (!take()) return "source";
    return total() ? null : "total";
  };
}
