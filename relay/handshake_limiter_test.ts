import assert from "node:assert/strict";
import { createHandshakeLimiter } from "./handshake_limiter.ts";

Deno.test("handshake limiter: per-IP budget refills over time and memory is bounded", () => {
  let t = 0;
  const admit = createHandshakeLimiter({ perSecond: 3, maxSources: 2, now: () => t });
  assert.deepEqual([1, 2, 3, 4].map(() => admit("a")), [true, true, true, false]);
  assert.equal(admit("b"), true, "other sources have their own budget");
  t = 1000;
  assert.equal(admit("a"), true, "refilled after a second");
  admit("c"); // evicts the least recently seen source ("b")
  t = 1000;
  assert.deepEqual([1, 2, 3, 4].map(() => admit("b")), [true, true, true, false]);
  assert.throws(() => createHandshakeLimiter({ perSecond: 0 }), RangeError);
});
