import assert from "node:assert/strict";
import { createPki, metric, scrape } from "../_support/harness.ts";
import { probe, startRelay } from "../_support/ops_util.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Writes `request` on a fresh connection and reads until the server closes it; resolves
 * with the status code of the answer (0 when cut off without one). Bounded by `ms`.
 */
async function exchange(address: string, request: Uint8Array, ms = 10_000): Promise<number> {
  const [hostname, port] = address.split(":");
  const conn = await Deno.connect({ hostname, port: Number(port) });
  const timer = setTimeout(() => conn.close(), ms);
  let text = "";
  try {
    await conn.write(request).catch(() => {});
    const buffer = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
  const match = /^HTTP\/1\.1 (\d{3})/.exec(text);
  return match ? Number(match[1]) : 0;
}

Deno.test("metrics listener: bad HTTP input is answered or cut off, /healthz still answers", async () => {
  const pki = await createPki([]);
  const relay = await startRelay(pki, { connectors: [], agents: [] });
  const address = String(relay.ready.metrics);
  try {
    const garbage = crypto.getRandomValues(new Uint8Array(2048));
    assert.ok([0, 400].includes(await exchange(address, garbage)), "garbage");
    assert.equal(
      await exchange(address, encoder.encode("\x00\x01 NONSENSE\r\n\r\n")),
      400,
      "nonsense request line",
    );

    const bigHeader = `GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`;
    assert.ok([0, 431].includes(await exchange(address, encoder.encode(bigHeader))), "64 KiB");

    assert.equal(
      await exchange(address, encoder.encode("POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")),
      405,
      "POST",
    );

    // Slowloris: one byte every 200 ms never completes the head; the read timeout cuts it.
    const [hostname, port] = address.split(":");
    const slow = await Deno.connect({ hostname, port: Number(port) });
    const slowStart = performance.now();
    let cutOff = false;
    const reader = (async () => {
      const buffer = new Uint8Array(1024);
      let text = "";
      for (;;) {
        const n = await slow.read(buffer).catch(() => null);
        if (n === null) break;
        text += decoder.decode(buffer.subarray(0, n));
      }
      cutOff = true;
      return text;
    })();
    const head = encoder.encode("GET /metrics HTTP/1.1\r\nX-Slow: ");
    for (let i = 0; i < 60 && !cutOff; i++) {
      await slow.write(head.subarray(i % head.length, (i % head.length) + 1)).catch(() => {});
      await new Promise((r) => setTimeout(r, 200));
    }
    const slowAnswer = await Promise.race([
      reader,
      new Promise<null>((r) => setTimeout(() => r(null), 2000)),
    ]);
    try {
      slow.close();
    } catch {
      // Already closed by the server.
    }
    assert.ok(cutOff, "slowloris connection was not cut off within 12 s");
    assert.ok(slowAnswer === "" || /^HTTP\/1\.1 408/.test(slowAnswer ?? ""), `${slowAnswer}`);
    const slowMs = Math.round(performance.now() - slowStart);

    // 500 connections at once: each is answered (200, or 503 above the cap) or closed.
    const statuses = await Promise.all(
      Array.from(
        { length: 500 },
        () => exchange(address, encoder.encode("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")),
      ),
    );
    const count = (status: number) => statuses.filter((s) => s === status).length;
    assert.equal(count(200) + count(503) + count(0), 500, `statuses: ${statuses}`);
    assert.ok(count(200) > 0);

    assert.equal(await probe(address, "/healthz"), 200);
    assert.equal(await probe(address, "/readyz"), 200);
    const samples = await scrape(address);
    for (const status of ["400", "408"]) {
      assert.ok(
        metric(samples, `ztna_relay_ops_bad_requests_total{status="${status}"}`) >= 1,
        `bad request ${status} counted`,
      );
    }
    console.log(
      `metrics listener: slowloris cut after ${slowMs} ms; 500 parallel: ` +
        `${count(200)}x200 ${count(503)}x503 ${count(0)} closed`,
    );
  } finally {
    await relay.stop();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

/** A fetch of `path` with `method` that must answer within `ms`; resolves with its status. */
async function request(address: string, path: string, method: string, ms = 3000): Promise<number> {
  const response = await fetch(`http://${address}${path}`, {
    method,
    signal: AbortSignal.timeout(ms),
  });
  await response.body?.cancel();
  return response.status;
}

Deno.test("metrics listener: 200 one-byte connections cannot fail a probe, and each is counted and closed", async () => {
  const pki = await createPki([]);
  const relay = await startRelay(pki, { connectors: [], agents: [] });
  const address = String(relay.ready.metrics);
  const [hostname, port] = address.split(":");
  const attackers: Deno.Conn[] = [];
  try {
    // Three times the listener's 64 slots, each holding an unfinished request head.
    for (let i = 0; i < 200; i++) {
      const conn = await Deno.connect({ hostname, port: Number(port) });
      await conn.write(encoder.encode("G"));
      attackers.push(conn);
    }
    for (const path of ["/livez", "/healthz", "/readyz"]) {
      for (const method of ["GET", "HEAD"]) {
        assert.equal(await request(address, path, method), 200, `${method} ${path}`);
      }
    }
    // /metrics answers under the attack too, and already shows the evictions.
    const during = await scrape(address);
    assert.ok(
      metric(during, 'ztna_relay_ops_bad_requests_total{status="408"}') >= 200 - 64,
      "evictions counted during the attack",
    );
    // Every attacker is closed: evicted for a newcomer, or cut off at the 5 s read timeout.
    const closed = Promise.all(attackers.map(async (conn) => {
      const buffer = new Uint8Array(1024);
      while (await conn.read(buffer).catch(() => null) !== null) {
        // An answer (408) is read and dropped; EOF or a reset ends the loop.
      }
    }));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) =>
      timer = setTimeout(() => resolve("late"), 15_000)
    );
    const outcome = await Promise.race([closed, late]).finally(() => clearTimeout(timer));
    assert.notEqual(outcome, "late", "every attacker closed within 15 s");
    const after = await scrape(address);
    assert.ok(
      metric(after, 'ztna_relay_ops_bad_requests_total{status="408"}') >= 200,
      "every one-byte connection counted once as a 408",
    );
    assert.equal(metric(after, 'ztna_relay_ops_bad_requests_total{status="503"}'), 0, "no 503");
  } finally {
    for (const conn of attackers) {
      try {
        conn.close();
      } catch {
        // Closed by the server.
      }
    }
    await relay.stop();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
