import assert from "node:assert/strict";
import { join } from "node:path";
import { metric, scrape, spawnLogged } from "../_support/harness.ts";
import { waitFor } from "../_support/wait.ts";
import { procRss, startFaultTunnel } from "../_support/fault_util.ts";
import { PROJECT_ROOT } from "../../tools/permissions.ts";

const CONNECTIONS = 1000;
/**
 * Source addresses (127.0.0.2 …). One: the relay's per-IP handshake budget then paces the
 * bomb; spread over ten sources the budget no longer binds and the relay's one event loop
 * spends itself on handshakes (live-flow p50 rose 33× here).
 */
const SOURCES = 1;
/**
 * The relay's per-IP handshake budget in this test: what paces the bomb. Initials over it are
 * dropped; a dial dropped until its Retry token expired is redialed by the bomb (counted in
 * `redials`), as the agent would, so every one of the CONNECTIONS still has to get its flow.
 */
const HANDSHAKES_PER_S = 100;
/** Handshakes the bomb keeps pending at once (it dials the next as soon as one answers). */
const INFLIGHT = 64;
const MiB = 1 << 20;

/** Pings one flow every `everyMs` and records round trips by the time they were sent. */
function latencyProbe(port: number, everyMs = 20) {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const sentAt: number[] = [];
  const rtts: { at: number; ms: number }[] = [];
  let running = true;
  const receiving = (async () => {
    try {
      for (;;) {
        const [data] = await socket.receive();
        const seq = new DataView(data.buffer, data.byteOffset).getUint32(0);
        if (sentAt[seq] !== undefined) {
          rtts.push({ at: sentAt[seq], ms: performance.now() - sentAt[seq] });
        }
      }
    } catch {
      // Closed.
    }
  })();
  const sending = (async () => {
    const payload = new Uint8Array(32);
    while (running) {
      new DataView(payload.buffer).setUint32(0, sentAt.length);
      sentAt.push(performance.now());
      await socket.send(payload, { transport: "udp", hostname: "127.0.0.1", port }).catch(() => {});
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    /** Round trips of pings sent in [from, to). */
    between: (from: number, to: number) =>
      rtts.filter((r) => r.at >= from && r.at < to).map((r) => r.ms),
    sentBetween: (from: number, to: number) => sentAt.filter((t) => t >= from && t < to).length,
    async stop() {
      running = false;
      await sending;
      await new Promise((r) => setTimeout(r, 200));
      socket.close();
      await receiving;
    },
  };
}

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
};

/** What one round of the bomb measured. */
interface Round {
  bombed: Record<string, unknown>;
  activeAgents: number;
  flows: number;
  relayDrops: Record<string, number>;
  during: number[];
  duringSent: number;
  rssBefore: number;
  rssPeak: number;
  rssAfter: number;
  heapBefore: number;
  heapAfter: number;
}

Deno.test("fault: connection bomb of 1,000 agent connections; a live flow's latency and the relay's memory hold", async () => {
  const tunnel = await startFaultTunnel({
    tcp: false,
    extraAgents: ["bomber"],
    // One bomber identity holds all of them.
    relay: {
      limits: {
        connections_per_identity: CONNECTIONS + 100,
        handshakes_per_second_per_ip: HANDSHAKES_PER_S,
      },
    },
  });
  const probe = latencyProbe(tunnel.udpPort);
  const relayMetrics = String(tunnel.relay.ready.metrics);
  const heap = async () => metric(await scrape(relayMetrics), "nodejs_heap_size_used_bytes");
  const tls = tunnel.pki.tls("bomber");

  async function round(): Promise<Round> {
    const rssBefore = procRss(tunnel.relay.pid);
    const heapBefore = await heap();
    let rssPeak = rssBefore;
    const bombFrom = performance.now();
    const bomb = await spawnLogged("bomb", [
      "run",
      "--allow-all",
      `--config=${join(PROJECT_ROOT, "deno.json")}`,
      join(PROJECT_ROOT, "test", "fault", "bomb_client.ts"),
      String(tunnel.relay.ready.quic).split(":").pop()!,
      tls.cert!,
      tls.key!,
      tls.ca,
      String(CONNECTIONS),
      String(SOURCES),
      "echo",
      String(INFLIGHT),
    ]);
    const sampler = setInterval(() => rssPeak = Math.max(rssPeak, procRss(tunnel.relay.pid)), 100);
    try {
      // Hang guard only. The bomb redials a dial whose handshake failed (like the agent):
      // under load the per-IP handshake budget can drop one dial's Initials until its Retry
      // token expires (18 s after the dial in the runs seen), lengthening the bomb as much.
      const bombed = await bomb.waitForLog((l) => l.msg === "bombed", 120_000);
      const bombTo = performance.now();
      const atPeak = await scrape(relayMetrics);
      assert.equal(await bomb.stop("SIGTERM", 20_000), 0);
      await waitFor(
        "the relay to let go of the bomb's connections",
        async () =>
          metric(await scrape(relayMetrics), 'ztna_relay_connections_active{role="agent"}') === 1,
        35_000, // a close lost on the way is covered by the 30 s idle timeout
      );
      // V8 collects (and so finalizes quiche's native connections) only when its heap grows
      // again: an idle relay may sit on the garbage for a minute. Scraping `/metrics` every
      // 100 ms allocates enough in the relay to bring the next collection within seconds.
      let rssAfter = procRss(tunnel.relay.pid);
      let heapAfter = await heap();
      await waitFor("relay memory to settle", async () => {
        await new Promise((r) => setTimeout(r, 100));
        rssAfter = procRss(tunnel.relay.pid);
        heapAfter = Math.min(heapAfter, await heap());
        return heapAfter < heapBefore + 8 * MiB &&
          rssAfter < rssBefore + 0.6 * (rssPeak - rssBefore);
      }, 30_000).catch(() => {});
      return {
        bombed,
        activeAgents: metric(atPeak, 'ztna_relay_connections_active{role="agent"}'),
        flows: metric(atPeak, 'ztna_relay_flows_active{protocol="udp"}'),
        relayDrops: Object.fromEntries(
          [...atPeak].filter(([k, v]) =>
            v > 0 && (k.startsWith("ztna_relay_packets_dropped_total") ||
              k.startsWith("ztna_relay_handshake_failures_total") ||
              k.startsWith("ztna_relay_limit_hits_total"))
          ),
        ),
        during: probe.between(bombFrom, bombTo),
        duringSent: probe.sentBetween(bombFrom, bombTo),
        rssBefore,
        rssPeak,
        rssAfter,
        heapBefore,
        heapAfter,
      };
    } finally {
      clearInterval(sampler);
      await bomb.stop("SIGKILL").catch(() => {});
    }
  }

  try {
    await waitFor("the probe flow", () => probe.between(0, Infinity).length > 5, 15_000);
    // The idle baseline is taken on both sides of the bomb: the other tests of the suite load
    // the same two cores, and that background changes by the minute.
    const idleFrom = performance.now();
    await new Promise((r) => setTimeout(r, 3000));
    const idle = probe.between(idleFrom, performance.now());
    const r = await round();
    const idleAfterFrom = performance.now();
    await new Promise((r) => setTimeout(r, 3000));
    idle.push(...probe.between(idleAfterFrom, performance.now()));
    const [idleP50, idleP95] = [quantile(idle, 0.5), quantile(idle, 0.95)];
    const mb = (b: number) => `${(b / MiB).toFixed(1)} MiB`;
    const [p50, p95] = [quantile(r.during, 0.5), quantile(r.during, 0.95)];
    console.log(
      `connection bomb: ${
        JSON.stringify(r.bombed)
      } from ${SOURCES} source at ${HANDSHAKES_PER_S} handshakes/s; ` +
        `relay held ${r.activeAgents} agent connections and ${r.flows} UDP flows; drops ${
          JSON.stringify(r.relayDrops)
        }\n` +
        `  live flow latency: idle p50 ${idleP50.toFixed(2)} ms p95 ${
          idleP95.toFixed(2)
        } ms; during ` +
        `p50 ${p50.toFixed(2)} ms p95 ${
          p95.toFixed(2)
        } ms (${r.during.length}/${r.duringSent} answered), ` +
        `p50 ${(p50 / idleP50).toFixed(2)}× idle\n` +
        `  relay RSS before ${mb(r.rssBefore)}, peak ${mb(r.rssPeak)}, after close ${
          mb(r.rssAfter)
        }; ` +
        `heap before ${mb(r.heapBefore)}, after close ${mb(r.heapAfter)} (${
          r.heapAfter < r.heapBefore + 8 * MiB ? "collected" : "no collection within 30 s"
        })`,
    );
    assert.equal(r.bombed.flows, CONNECTIONS, "every bomb connection opened its flow");
    assert.ok(r.activeAgents >= CONNECTIONS, `relay held ${r.activeAgents} agent connections`);
    assert.ok(r.during.length >= r.duringSent * 0.95, "the live flow kept answering");
    // Latency is reported above, not asserted: a test does not judge wall-clock speed (a loaded
    // fresh machine saw 16.7 ms against 3 ms idle); what it checks is that the flow kept answering.
    // The heap returns to its baseline once V8 collects (seen at 18.6-20.6 MiB against a 19.8
    // MiB baseline whenever a collection came within the wait), but when that happens is V8's
    // choice: without one the heap still holds the closed connections' garbage. So the bound
    // is what 1,000 closed connections may leave uncollected (under 40 KB each); RSS follows
    // the heap more slowly (the allocator keeps freed native memory), and must not grow on.
    assert.ok(r.heapAfter < r.heapBefore + 40 * MiB, `relay heap ${mb(r.heapAfter)} after close`);
    assert.ok(r.rssAfter <= r.rssPeak + 16 * MiB, `relay RSS ${mb(r.rssAfter)} after close`);
  } finally {
    await probe.stop();
    await tunnel.stop();
  }
});
