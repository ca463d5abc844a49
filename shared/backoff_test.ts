import assert from "node:assert/strict";
import { createBackoff, sleep } from "./backoff.ts";

Deno.test("next() grows the cap from base to max with full jitter", () => {
  const backoff = createBackoff({ random: () => 0.999999 });
  const delays = Array.from({ length: 8 }, () => backoff.next());
  assert.deepEqual(delays, [999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
  assert.equal(backoff.attempt, 8);
});

Deno.test("next() stays within [0, cap) for any random value", () => {
  let r = 0;
  const values = [0, 0.25, 0.5, 0.999];
  const backoff = createBackoff({
    baseMs: 100,
    maxMs: 1000,
    multiplier: 3,
    random: () => values[r++ % values.length],
  });
  for (let attempt = 0; attempt < 40; attempt++) {
    const cap = Math.min(1000, 100 * 3 ** attempt);
    const delay = backoff.next();
    assert.ok(delay >= 0 && delay < cap, `attempt ${attempt}: ${delay} not in [0, ${cap})`);
    assert.equal(delay, Math.floor(values[attempt % values.length] * cap));
  }
});

Deno.test("the cap saturates at max after many attempts without overflow", () => {
  const backoff = createBackoff({ random: () => 0.5 });
  for (let i = 0; i < 2000; i++) backoff.next();
  assert.equal(backoff.next(), 15000);
});

Deno.test("reset() starts again from the first attempt", () => {
  const backoff = createBackoff({ random: () => 0.5 });
  backoff.next();
  backoff.next();
  backoff.reset();
  assert.equal(backoff.attempt, 0);
  assert.equal(backoff.next(), 500);
});

Deno.test("a connection that lived stableAfterMs resets the attempts at the next failure", () => {
  let time = 0;
  const backoff = createBackoff({ random: () => 0.5, stableAfterMs: 30000, now: () => time });
  backoff.next();
  backoff.next();
  backoff.next();
  backoff.connected();
  time += 29999;
  // Short-lived: keeps growing.
  assert.equal(backoff.next(), 4000);
  backoff.connected();
  time += 30000;
  // Stable: back to the base.
  assert.equal(backoff.next(), 500);
  assert.equal(backoff.attempt, 1);
  // The stable connection is consumed: later failures grow again.
  time += 60000;
  assert.equal(backoff.next(), 1000);
});

Deno.test("createBackoff() validates its options", () => {
  assert.throws(() => createBackoff({ baseMs: -1 }), {
    name: "RangeError",
    message: "Cannot create backoff as 'baseMs' must be a finite number >= 0: current value is -1",
  });
  assert.throws(() => createBackoff({ maxMs: 10 }), RangeError);
  assert.throws(() => createBackoff({ multiplier: 0.5 }), RangeError);
  assert.throws(() => createBackoff({ stableAfterMs: NaN }), RangeError);
});

Deno.test("sleep() resolves true after the delay", async () => {
  const start = performance.now();
  assert.equal(await sleep(20), true);
  assert.ok(performance.now() - start >= 15);
});

Deno.test("sleep() resolves false on abort and clears its timer", async () => {
  const controller = new AbortController();
  const waiting = sleep(60_000, controller.signal);
  setTimeout(() => controller.abort(), 10);
  // false, not true: the abort ended it, not the 60 s delay. Deno's leak sanitizer fails
  // this test if the 60 s timer were still pending.
  assert.equal(await waiting, false);
});

Deno.test("sleep() resolves false at once when already aborted", async () => {
  assert.equal(await sleep(60_000, AbortSignal.abort()), false);
});

Deno.test("sleep() leaves no abort listener behind after the delay", async () => {
  const controller = new AbortController();
  assert.equal(await sleep(1, controller.signal), true);
  // Aborting later must not throw or resolve anything.
  controller.abort();
});

Deno.test("sleep() throws RangeError for a negative or non-finite delay", () => {
  assert.throws(() => sleep(-1), {
    name: "RangeError",
    message: "Cannot sleep as 'ms' must be a finite number >= 0: current value is -1",
  });
  assert.throws(() => sleep(Infinity), RangeError);
});
