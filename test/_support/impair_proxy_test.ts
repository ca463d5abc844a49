import assert from "node:assert/strict";
import {
  type Impairment,
  planDatagram,
  seededRandom,
  startImpairProxy,
  validateImpairment,
} from "./impair_proxy.ts";

/** A loopback UDP echo server (the "relay" behind the proxy). */
function echoServer() {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const loop = (async () => {
    try {
      for (;;) {
        const [data, from] = await socket.receive();
        await socket.send(data, from);
      }
    } catch {
      // Closed.
    }
  })();
  return {
    port: (socket.addr as Deno.NetAddr).port,
    async close() {
      socket.close();
      await loop;
    },
  };
}

/** Sends `count` numbered datagrams through `port` and collects echoes for `settleMs`. */
async function roundTrip(port: number, count: number, settleMs: number, size = 64) {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const received: Uint8Array[] = [];
  const loop = (async () => {
    try {
      for (;;) received.push((await socket.receive())[0].slice());
    } catch {
      // Closed.
    }
  })();
  for (let i = 0; i < count; i++) {
    const data = new Uint8Array(size).fill(i & 0xff);
    new DataView(data.buffer).setUint32(0, i);
    await socket.send(data, { transport: "udp", hostname: "127.0.0.1", port });
    // Paced so the kernel's socket buffers never overflow on a loaded machine.
    if (i % 10 === 9) await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, settleMs));
  socket.close();
  await loop;
  return received;
}

const seqOf = (d: Uint8Array) => new DataView(d.buffer, d.byteOffset).getUint32(0);

Deno.test("impair proxy: planDatagram is deterministic per seed and honours each rate", () => {
  const impairment: Impairment = {
    loss: 0.1,
    delayMs: 5,
    jitterMs: 20,
    duplicate: 0.05,
    reorder: 0.05,
    corrupt: 0.02,
  };
  const run = (seed: number) => {
    const random = seededRandom(seed);
    return Array.from({ length: 20_000 }, () => planDatagram(impairment, 1200, random));
  };
  const a = run(42);
  assert.deepEqual(a, run(42), "same seed, same decisions");
  assert.notDeepEqual(a.slice(0, 200), run(43).slice(0, 200), "another seed differs");
  const share = (f: (p: ReturnType<typeof planDatagram>) => boolean) =>
    a.filter(f).length / a.length;
  const kept = a.filter((p) => !p.dropped);
  assert.ok(Math.abs(share((p) => p.dropped) - 0.1) < 0.01);
  assert.ok(Math.abs(kept.filter((p) => p.duplicated).length / kept.length - 0.05) < 0.01);
  assert.ok(Math.abs(kept.filter((p) => p.reordered).length / kept.length - 0.05) < 0.01);
  assert.ok(Math.abs(kept.filter((p) => p.corrupted).length / kept.length - 0.02) < 0.006);
  for (const plan of kept) {
    assert.equal(plan.copies.length, plan.duplicated ? 2 : 1);
    const [first] = plan.copies;
    // Reordered datagrams are held back by jitter + 10 ms on top of their own delay.
    const max = 5 + 20 + (plan.reordered ? 30 : 0);
    assert.ok(first.delayMs >= 5 && first.delayMs < max, `delay ${first.delayMs}`);
    if (plan.corrupted) assert.ok(first.corruptAt! >= 0 && first.corruptAt! < 1200);
    else assert.equal(first.corruptAt, null);
    if (plan.duplicated) assert.equal(plan.copies[1].corruptAt, null);
  }
  assert.deepEqual(
    planDatagram({}, 10, seededRandom(1)).copies,
    [{ delayMs: 0, corruptAt: null }],
    "no impairment: one copy, no delay",
  );
});

Deno.test("impair proxy: rejects rates outside [0, 1] and negative times", () => {
  assert.throws(() => validateImpairment({ loss: 1.5 }), /'loss' must be a rate in \[0, 1\]/);
  assert.throws(() => validateImpairment({ jitterMs: -1 }), /'jitterMs' must be a non-negative/);
  assert.throws(
    () => startImpairProxy({ target: { host: "127.0.0.1", port: 9 }, upstream: { corrupt: -0.1 } }),
    RangeError,
  );
});

Deno.test("impair proxy: clean path forwards both ways in order", async () => {
  const echo = echoServer();
  const proxy = startImpairProxy({ target: { host: "127.0.0.1", port: echo.port } });
  try {
    const received = await roundTrip(proxy.port, 500, 200);
    assert.deepEqual(received.map(seqOf), Array.from({ length: 500 }, (_, i) => i));
    const stats = proxy.stats();
    assert.equal(stats.upstream.forwarded, 500);
    assert.equal(stats.downstream.forwarded, 500);
  } finally {
    await proxy.close();
    await echo.close();
  }
});

Deno.test("impair proxy: loss, duplication, reordering and corruption on the wire", async () => {
  const echo = echoServer();
  const impairment: Impairment = {
    loss: 0.05,
    jitterMs: 10,
    duplicate: 0.05,
    reorder: 0.05,
    corrupt: 0.05,
  };
  const proxy = startImpairProxy({
    target: { host: "127.0.0.1", port: echo.port },
    seed: 7,
    upstream: impairment,
    downstream: {},
  });
  try {
    const count = 2000;
    const received = await roundTrip(proxy.port, count, 400, 256);
    const stats = proxy.stats().upstream;
    assert.equal(stats.received, count);
    assert.ok(stats.dropped > 40 && stats.dropped < 170, `dropped ${stats.dropped}`);
    assert.ok(stats.duplicated > 40, `duplicated ${stats.duplicated}`);
    assert.ok(stats.corrupted > 40, `corrupted ${stats.corrupted}`);
    assert.ok(stats.reordered > 40, `reordered ${stats.reordered}`);
    assert.equal(received.length, count - stats.dropped + stats.duplicated);
    // A corrupted datagram has exactly one byte flipped; others are intact.
    const intact = (d: Uint8Array) => d.subarray(4).every((b) => b === (seqOf(d) & 0xff));
    const damaged = received.filter((d) => !intact(d) || seqOf(d) >= count).length;
    assert.ok(damaged > 0 && damaged <= stats.corrupted, `damaged ${damaged}`);
    const order = received.filter(intact).map(seqOf);
    let inversions = 0;
    for (let i = 1; i < order.length; i++) if (order[i] < order[i - 1]) inversions++;
    assert.ok(inversions > 20, `only ${inversions} out-of-order arrivals`);
  } finally {
    await proxy.close();
    await echo.close();
  }
});

Deno.test("impair proxy: delay holds datagrams back; a black-hole drops everything for its period", async () => {
  const echo = echoServer();
  const proxy = startImpairProxy({
    target: { host: "127.0.0.1", port: echo.port },
    upstream: { delayMs: 40 },
  });
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: proxy.port };
  const ping = async (ms: number) => {
    const sent = performance.now();
    await socket.send(new Uint8Array([1, 2, 3]), to);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const answer = await Promise.race([
      socket.receive().then(() => performance.now() - sent),
      new Promise<null>((r) => timer = setTimeout(() => r(null), ms)),
    ]);
    clearTimeout(timer);
    return answer;
  };
  try {
    const rtt = await ping(2000);
    assert.ok(rtt !== null && rtt >= 38, `round trip ${rtt} ms with a 40 ms delay`);
    proxy.blackhole(400);
    assert.equal(proxy.blackholed, true);
    assert.equal(await ping(300), null, "nothing passes while black-holed");
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(proxy.blackholed, false);
    // The echo of the swallowed ping never comes; a new one does.
    assert.ok(await ping(2000) !== null, "the path is back");
    assert.ok(proxy.stats().upstream.blackholed >= 1);
  } finally {
    socket.close();
    await proxy.close();
    await echo.close();
  }
});
