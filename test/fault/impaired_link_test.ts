import assert from "node:assert/strict";
import { metric, scrape } from "../_support/harness.ts";
import { startFaultTunnel } from "../_support/fault_util.ts";
import type { Impairment } from "../_support/impair_proxy.ts";
import {
  patternChunks,
  patternSha256,
  readAll,
  withTimeout,
  writeAll,
} from "../_support/tcp_util.ts";

const MiB = 1 << 20;
/**
 * Bound of the upload, a hang guard. The upload rides one end-to-end session, so its loss
 * recovery spans both impaired hops (about 10% loss, 0-60 ms of jitter). It stays within one
 * stream flow-control window (1 MiB): past that, the transfer needs the receiver's
 * MAX_STREAM_DATA updates, and when one is lost quiche 0.18 can leave the sender blocked for
 * tens of seconds (docs/OPERATIONS.md, known limitations): 2 MiB failed one run in six
 * within 120 s here, 8 MiB one full-suite run in three within 300 s, 512 KiB none in six
 * (4-12 s each).
 */
const UPLOAD_TIMEOUT_MS = 300_000;
/** 5% loss, 0-30 ms jitter (reorders on its own), 2% held back, 0.5% duplicated and corrupted. */
const HOP: Impairment = {
  loss: 0.05,
  jitterMs: 30,
  reorder: 0.02,
  duplicate: 0.005,
  corrupt: 0.005,
};

Deno.test("fault: 5% loss + 30 ms jitter + reordering on both hops", async (t) => {
  await using tunnel = await startFaultTunnel({ agentHop: HOP, connectorHop: HOP, seed: 11 });
  // UDP first: its datagrams share the session's congestion control with the TCP upload, and
  // after a lossy upload that state can leave datagrams queued behind unacknowledged stream
  // data (one run echoed 786 of 2,000; docs/OPERATIONS.md, known limitations).
  await t.step(
    "UDP: only what the link lets through, no duplicates, nothing corrupted",
    async () => {
      const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      const count = 2000;
      const size = 200;
      const payload = (seq: number) => {
        const data = new Uint8Array(size);
        for (let i = 4; i < size; i++) data[i] = (seq * 131 + i * 17) & 0xff;
        new DataView(data.buffer).setUint32(0, seq);
        return data;
      };
      const seen = new Map<number, number>();
      // The flow is opened with its own sequence number, so that late echoes of the opening
      // datagrams (several may be in flight while the session's handshake runs) can never
      // pass for duplicates of the numbered run.
      const WARMUP = count;
      let warmedUp = false;
      let corrupted = 0;
      let foreign = 0;
      const receiving = (async () => {
        try {
          for (;;) {
            const [data] = await socket.receive();
            if (data.length !== size) {
              corrupted++;
              continue;
            }
            const seq = new DataView(data.buffer, data.byteOffset).getUint32(0);
            if (seq === WARMUP && data.every((b, i) => b === payload(WARMUP)[i])) {
              warmedUp = true;
              continue;
            }
            if (seq >= count) {
              foreign++;
              continue;
            }
            const expected = payload(seq);
            if (!data.every((b, i) => b === expected[i])) corrupted++;
            else seen.set(seq, (seen.get(seq) ?? 0) + 1);
          }
        } catch {
          // Closed.
        }
      })();
      const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: tunnel.udpPort };
      // The first datagram opens the flow; wait for it so the numbered run measures the path.
      const opened = performance.now();
      while (!warmedUp && performance.now() - opened < 15_000) {
        await socket.send(payload(WARMUP), to);
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(warmedUp, "the UDP flow opened through the impaired path");
      const before = await scrape(String(tunnel.relay.ready.metrics));
      const start = performance.now();
      for (let seq = 0; seq < count; seq++) {
        await socket.send(payload(seq), to);
        const next = start + (seq + 1) * 2; // 500 datagrams/s
        await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
      }
      await new Promise((r) => setTimeout(r, 1500));
      socket.close();
      await receiving;
      const after = await scrape(String(tunnel.relay.ready.metrics));
      const duplicates = [...seen.values()].filter((n) => n > 1).length;
      const received = seen.size;
      // Each datagram crosses 4 impaired legs (agent→relay→connector→echo→…→agent): with 5%
      // loss per leg about 81% make it, fewer where the flow queue or jitter interferes.
      const stats = [tunnel.agentProxy!.stats(), tunnel.connectorProxy!.stats()];
      const legs = stats.flatMap((s) => [s.upstream, s.downstream]);
      const injected = {
        duplicated: legs.reduce((n, s) => n + s.duplicated, 0),
        corrupted: legs.reduce((n, s) => n + s.corrupted, 0),
      };
      const relayDrops = (key: string) => metric(after, key) - metric(before, key);
      console.log(
        `impaired link: UDP sent ${count}, echoed ${received} (${
          (100 * received / count).toFixed(1)
        }%, 4 legs at 5% loss ≈ 81%), duplicates ${duplicates}, corrupted ${corrupted}, ` +
          `foreign ${foreign}; proxies duplicated ${injected.duplicated} and corrupted ${injected.corrupted} packets; ` +
          `relay malformed drops +${relayDrops('ztna_relay_drops_total{reason="malformed"}')}`,
      );
      assert.equal(corrupted, 0, "no corrupted payload reaches the application");
      assert.equal(foreign, 0, "no payload that was never sent");
      assert.equal(duplicates, 0, "the tunnel creates no duplicates");
      assert.ok(injected.duplicated > 0 && injected.corrupted > 0, "the proxies did interfere");
      assert.ok(received >= count * 0.6, `only ${received} of ${count} echoed`);
      assert.ok(received < count, "a lossy link cannot deliver everything (UDP is not retried)");
    },
  );
  await t.step("a 512 KiB TCP upload arrives with the right SHA-256", async () => {
    const total = MiB / 2;
    const started = performance.now();
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: tunnel.tcpPort });
    try {
      const answer = await withTimeout(
        (async () => {
          for (const chunk of patternChunks(total, 3)) await writeAll(conn, chunk);
          await conn.closeWrite();
          return new TextDecoder().decode(await readAll(conn, UPLOAD_TIMEOUT_MS));
        })(),
        UPLOAD_TIMEOUT_MS,
        "512 KiB upload over the impaired path",
      );
      const seconds = (performance.now() - started) / 1000;
      console.log(
        `impaired link: 512 KiB TCP upload in ${seconds.toFixed(1)} s (${
          (total / MiB / seconds).toFixed(2)
        } MiB/s), SHA-256 ${
          answer.startsWith(`${total} ${patternSha256(total, 3)}`) ? "matches" : "DIFFERS"
        }`,
      );
      assert.equal(answer, `${total} ${patternSha256(total, 3)}\n`);
    } finally {
      conn.close();
    }
  });
});
