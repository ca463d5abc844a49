/**
 * A token bucket: a sustained rate with a bounded burst, for per-connection limits such as
 * control frames per second.
 *
 * @module
 */

/** Options for {@linkcode createTokenBucket}. */
export interface TokenBucketOptions {
  /** Tokens added per second (the sustained rate). */
  perSecond: number;
  /**
   * Bucket size: how many may be taken at once after a quiet period.
   *
   * @default {perSecond}
   */
  burst?: number;
  /**
   * Clock in milliseconds; injectable for tests.
   *
   * @default {performance.now}
   */
  now?: () => number;
}

/**
 * Returns `take()`: true while the rate allows one more, false once it is exhausted.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createTokenBucket } from "./token_bucket.ts";
 *
 * let t = 0;
 * const take = createTokenBucket({ perSecond: 2, burst: 3, now: () => t });
 * assert.deepEqual([take(), take(), take(), take()], [true, true, true, false]);
 * t = 500; // half a second refills one
 * assert.deepEqual([take(), take()], [true, false]);
 * ```
 *
 * @param options Rate, burst and clock.
 * @returns The take function.
 */
export function createTokenBucket(options: TokenBucketOptions): () => boolean {
  const { perSecond, burst = perSecond, now = () => performance.now() } = options;
  if (!Number.isFinite(perSecond) || perSecond <= 0) {
    throw new RangeError(
      `Cannot create token bucket as 'perSecond' must be a positive number: current value is ${perSecond}`,
    );
  }
  if (!Number.isFinite(burst) || burst < 1) {
    throw new RangeError(
      `Cannot create token bucket as 'burst' must be a number >= 1: current value is ${burst}`,
    );
  }
  let tokens = burst;
  let at = now();
  return () => {
    const t = now();
    tokens = Math.min(burst, tokens + ((t - at) / 1000) * perSecond);
    at = t;
    if (tokens < 1) return false;
    tokens -= 1;
    return true;
  };
}
