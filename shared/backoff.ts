/**
 * Reconnect backoff: exponential with full jitter and a reset after a stable
 * connection, plus an abortable {@linkcode sleep} so shutdown interrupts the
 * wait at once. Every reconnect loop (connector, agent) uses this one type.
 *
 * @module
 */

/** Options for {@linkcode createBackoff}. */
export interface BackoffOptions {
  /**
   * Delay cap of the first attempt, in ms.
   *
   * @default {1000}
   */
  baseMs?: number;
  /**
   * Largest delay cap, in ms.
   *
   * @default {30000}
   */
  maxMs?: number;
  /**
   * Growth of the cap per attempt.
   *
   * @default {2}
   */
  multiplier?: number;
  /**
   * Random source in [0, 1); injectable for tests.
   *
   * @default {Math.random}
   */
  random?: () => number;
  /**
   * How long a connection must have lived, in ms, for the next failure to start
   * again from the first attempt.
   *
   * @default {30000}
   */
  stableAfterMs?: number;
  /**
   * Clock in ms; injectable for tests.
   *
   * @default {Date.now}
   */
  now?: () => number;
}

/** Backoff state of one reconnect loop. */
export interface Backoff {
  /**
   * Returns the delay before the next attempt, `random() * min(maxMs,
   * baseMs * multiplier ^ attempt)` rounded down, and counts the attempt. If
   * the connection reported by {@linkcode Backoff.connected} lived at least
   * `stableAfterMs`, the count is reset first.
   *
   * @returns The delay in ms.
   */
  next(): number;
  /** Starts again from the first attempt. */
  reset(): void;
  /** Records that a connection came up; its lifetime is checked at the next `next()`. */
  connected(): void;
  /** Attempts counted since the last reset. */
  readonly attempt: number;
}

function assertNonNegative(name: string, value: number): void {
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(
      `Cannot create backoff as '${name}' must be a finite number >= 0: current value is ${value}`,
    );
  }
}

/**
 * Creates a reconnect backoff.
 *
 * @example Usage
 * ```ts
 * import { createBackoff } from "./backoff.ts";
 * import assert from "node:assert/strict";
 *
 * const backoff = createBackoff({ random: () => 0.5 });
 * assert.equal(backoff.next(), 500);
 * assert.equal(backoff.next(), 1000);
 * backoff.reset();
 * assert.equal(backoff.next(), 500);
 * ```
 *
 * @param options Delays, growth, randomness and clock.
 * @returns The backoff.
 */
export function createBackoff(options: BackoffOptions = {}): Backoff {
  const {
    baseMs = 1000,
    maxMs = 30000,
    multiplier = 2,
    random = Math.random,
    stableAfterMs = 30000,
    now = Date.now,
  } = options;
  assertNonNegative("baseMs", baseMs);
  assertNonNegative("stableAfterMs", stableAfterMs);
  if (!Number.isFinite(maxMs) || maxMs < baseMs) {
    throw new RangeError(
      `Cannot create backoff as 'maxMs' must be a finite number >= baseMs (${baseMs}): current value is ${maxMs}`,
    );
  }
  if (!Number.isFinite(multiplier) || multiplier < 1) {
    throw new RangeError(
      `Cannot create backoff as 'multiplier' must be a finite number >= 1: current value is ${multiplier}`,
    );
  }

  let attempt = 0;
  let connectedAt: number | undefined;

  return {
    next(): number {
      if (connectedAt !== undefined) {
        if (now() - connectedAt >= stableAfterMs) attempt = 0;
        connectedAt = undefined;
      }
      // Math.min absorbs the Infinity the power reaches after many attempts.
      const cap = Math.min(maxMs, baseMs * multiplier ** attempt);
      attempt++;
      return Math.floor(random() * cap);
    },
    reset(): void {
      attempt = 0;
      connectedAt = undefined;
    },
    connected(): void {
      connectedAt = now();
    },
    get attempt(): number {
      return attempt;
    },
  };
}

/**
 * Waits `ms` milliseconds unless `signal` aborts first. Never rejects; the
 * timer is cleared on abort so it does not hold the process open.
 *
 * @example Usage
 * ```ts
 * import { sleep } from "./backoff.ts";
 * import assert from "node:assert/strict";
 *
 * const controller = new AbortController();
 * const waiting = sleep(60_000, controller.signal);
 * controller.abort();
 * assert.equal(await waiting, false);
 * assert.equal(await sleep(1), true);
 * ```
 *
 * @param ms How long to wait.
 * @param signal Aborts the wait.
 * @returns `true` when the time passed, `false` when aborted (at once if already aborted).
 * @throws {RangeError} Synchronously, when `ms` is negative or not finite.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(
      `Cannot sleep as 'ms' must be a finite number >= 0: current value is ${ms}`,
    );
  }
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
