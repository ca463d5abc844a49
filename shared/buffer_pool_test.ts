import assert from "node:assert/strict";
import { createBufferPool } from "./buffer_pool.ts";

Deno.test("acquire() allocates on a miss and reuses released buffers", () => {
  const pool = createBufferPool({ size: 1500, max: 2 });
  assert.deepEqual(pool.stats, { allocated: 0, available: 0, inUse: 0, misses: 0 });
  const a = pool.acquire();
  const b = pool.acquire();
  assert.equal(a.length, 1500);
  assert.notEqual(a, b);
  assert.deepEqual(pool.stats, { allocated: 2, available: 0, inUse: 2, misses: 2 });
  pool.release(a);
  assert.deepEqual(pool.stats, { allocated: 2, available: 1, inUse: 1, misses: 2 });
  assert.equal(pool.acquire(), a);
  assert.deepEqual(pool.stats, { allocated: 2, available: 0, inUse: 2, misses: 2 });
});

Deno.test("the pool never holds more than max free buffers", () => {
  const pool = createBufferPool({ size: 64, max: 2 });
  const buffers = [pool.acquire(), pool.acquire(), pool.acquire()];
  for (const buf of buffers) pool.release(buf);
  assert.deepEqual(pool.stats, { allocated: 3, available: 2, inUse: 0, misses: 3 });
  pool.acquire();
  pool.acquire();
  pool.acquire();
  assert.deepEqual(pool.stats, { allocated: 4, available: 0, inUse: 3, misses: 4 });
});

Deno.test("max 0 keeps nothing", () => {
  const pool = createBufferPool({ size: 8, max: 0 });
  pool.release(pool.acquire());
  assert.deepEqual(pool.stats, { allocated: 1, available: 0, inUse: 0, misses: 1 });
});

Deno.test("release() rejects wrong-size, foreign and already released buffers", () => {
  const pool = createBufferPool({ size: 16, max: 4 });
  assert.throws(() => pool.release(new Uint8Array(8)), {
    name: "RangeError",
    message: "Cannot release buffer as 'buf' must be 16 bytes long: current value is 8",
  });
  assert.throws(() => pool.release(pool.acquire().subarray(0, 8)), RangeError);
  assert.throws(() => pool.release(new Uint8Array(16)), RangeError);
  const buf = pool.acquire();
  pool.release(buf);
  assert.throws(() => pool.release(buf), RangeError);
  assert.equal(pool.stats.available, 1);
});

Deno.test("stats is a snapshot", () => {
  const pool = createBufferPool({ size: 4, max: 1 });
  const before = pool.stats;
  pool.acquire();
  assert.equal(before.inUse, 0);
  assert.equal(pool.stats.inUse, 1);
});

Deno.test("createBufferPool() validates its options", () => {
  assert.throws(() => createBufferPool({ size: 0, max: 1 }), {
    name: "RangeError",
    message: "Cannot create buffer pool as 'size' must be a positive integer: current value is 0",
  });
  assert.throws(() => createBufferPool({ size: 1.5, max: 1 }), RangeError);
  assert.throws(() => createBufferPool({ size: 1, max: -1 }), RangeError);
});
