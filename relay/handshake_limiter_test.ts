import assert from "node:assert/strict";
import { createHandshakeLimiter } from "./handshake_limiter.ts";

Deno.test("handshake limiter: per-IP budget refills over time and memory is bounded", () => {
  let t = 0;
  const admit = createHandshakeLimiter({ perSecond: 3, maxSources: 2, now: () => t });
  assert.deepEqual([1, 2, 3, 4].map(() => admit("a")), [null, null, null, "source"]);
  assert.equal(admit("b"), null, "other sources have their own budget");
  t = 1000;
  assert.equal(admit("a"), null, "refilled after a second");
  admit("c"); // evicts the least recently seen source ("b")
  assert.deepEqual([1, 2, 3, 4].map(() => admit("b")), [null, null, null, "source"]);
  assert.throws(() => createHandshakeLimiter({ perSecond: 0 }), RangeError);
});

Deno.test("handshake limiter: the relay-wide budget holds against many sources", () => {
  const admit = createHandshakeLimiter({ perSecond: 5, totalPerSecond: 4, now: () => 0 });
  const results = ["a", "b", "c", "d", "e", "f"].map((ip) => admit(ip));
  assert.deepEqual(results, [null, null, null, null, "total", "total"]);
});
