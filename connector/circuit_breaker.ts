/**
 * A circuit breaker for one backend's TCP connects: closed (connects go through), open
 * (refused at once, without touching the backend), half-open (one probe goes through; its
 * outcome closes or re-opens the circuit).
 *
 * @module
 */

/** The three states; the metric encodes them as 0, 1, 2 in this order. */
export type CircuitState = "closed" | "half_open" | "open";

/** The numeric value of each state in `ztna_connector_circuit_state`. */
export const CIRCUIT_STATE_VALUE: Record<CircuitState, number> = {
  closed: 0,
  half_open: 1,
  open: 2,
};

/** Options for {@linkcode createCircuitBreaker}. */
export interface CircuitBreakerOptions {
  /**
   * Consecutive failures that open the circuit.
   * @default {5}
   */
  failures?: number;
  /**
   * Time the circuit stays open before one probe is let through.
   * @default {5000}
   */
  resetMs?: number;
  /**
   * Clock in milliseconds.
   * @default {Date.now}
   */
  now?: () => number;
  /** Called on every state change. */
  onStateChange?: (from: CircuitState, to: CircuitState) => void;
}

/** A circuit breaker. */
export interface CircuitBreaker {
  /** The current state (an open circuit past `resetMs` reads open until `allow` probes). */
  readonly state: CircuitState;
  /**
   * Whether an attempt may go ahead now. After `resetMs` in the open state the first call
   * returns true (the probe, moving to half-open); later calls return false until the
   * probe's outcome is recorded.
   */
  allow(): boolean;
  /** Records a successful attempt: the circuit closes. */
  success(): void;
  /** Records a failed attempt: counts towards opening, or re-opens after a failed probe. */
  failure(): void;
}

/**
 * Creates a circuit breaker.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createCircuitBreaker } from "./circuit_breaker.ts";
 *
 * let now = 0;
 * const breaker = createCircuitBreaker({ failures: 2, resetMs: 100, now: () => now });
 * breaker.failure();
 * breaker.failure();
 * assert.equal(breaker.state, "open");
 * assert.equal(breaker.allow(), false);
 * now = 100;
 * assert.equal(breaker.allow(), true); // the probe
 * assert.equal(breaker.state, "half_open");
 * breaker.success();
 * assert.equal(breaker.state, "closed");
 * ```
 */
export function createCircuitBreaker(options: CircuitBreakerOptions = {}): CircuitBreaker {
  const { failures = 5, resetMs = 5000, now = Date.now, onStateChange } = options;
  if (!Number.isInteger(failures) || failures < 1) {
    throw new RangeError(
      `Cannot create a circuit breaker as 'failures' must be a positive integer: current value is ${failures}`,
    );
  }
  if (!Number.isFinite(resetMs) || resetMs < 0) {
    throw new RangeError(
      `Cannot create a circuit breaker as 'resetMs' must be a non-negative number: current value is ${resetMs}`,
    );
  }
  let state: CircuitState = "closed";
  let consecutive = 0;
  let openedAt = 0;

  function move(to: CircuitState): void {
    if (to === state) return;
    const from = state;
    state = to;
    onStateChange?.(from, to);
  }

  return {
    get state() {
      return state;
    },
    allow() {
      if (state === "closed") return true;
      if (state === "half_open") return false;
      if (now() - openedAt < resetMs) return false;
      move("half_open");
      return true;
    },
    success() {
      consecutive = 0;
      move("closed");
    },
    failure() {
      consecutive++;
      if (state === "half_open" || (state === "closed" && consecutive >= failures)) {
        openedAt = now();
        move("open");
      }
    },
  };
}
