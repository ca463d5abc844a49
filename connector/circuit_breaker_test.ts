import assert from "node:assert/strict";
import { type CircuitState, createCircuitBreaker } from "./circuit_breaker.ts";

Deno.test("circuit breaker: opens after consecutive failures only", () => {
  const breaker = createCircuitBreaker({ failures: 3, resetMs: 100, now: () => 0 });
  breaker.failure();
  breaker.failure();
  breaker.success(); // a success in between resets the count
  breaker.failure();
  breaker.failure();
  assert.equal(breaker.state, "closed");
  assert.equal(breaker.allow(), true);
  breaker.failure();
  assert.equal(breaker.state, "open");
  assert.equal(breaker.allow(), false);
});

Deno.test("circuit breaker: one half-open probe; its failure re-opens for another reset period", () => {
  let now = 0;
  const changes: [CircuitState, CircuitState][] = [];
  const breaker = createCircuitBreaker({
    failures: 1,
    resetMs: 100,
    now: () => now,
    onStateChange: (from, to) => changes.push([from, to]),
  });
  breaker.failure();
  now = 99;
  assert.equal(breaker.allow(), false);
  now = 100;
  assert.equal(breaker.allow(), true);
  assert.equal(breaker.allow(), false, "only one probe at a time");
  breaker.failure();
  assert.equal(breaker.state, "open");
  now = 150;
  assert.equal(breaker.allow(), false);
  now = 200;
  assert.equal(breaker.allow(), true);
  breaker.success();
  assert.equal(breaker.allow(), true);
  assert.deepEqual(changes, [
    ["closed", "open"],
    ["open", "half_open"],
    ["half_open", "open"],
    ["open", "half_open"],
    ["half_open", "closed"],
  ]);
});

Deno.test("circuit breaker: rejects bad options", () => {
  assert.throws(() => createCircuitBreaker({ failures: 0 }), RangeError);
  assert.throws(() => createCircuitBreaker({ resetMs: -1 }), RangeError);
});
