import assert from "node:assert/strict";
import { metric, scrape } from "../_support/harness.ts";
import { waitFor } from "../_support/wait.ts";
import { metricSum, procRss, startFaultTunnel } from "../_support/fault_util.ts";
import { numberedStream, untilEcho } from "../_support/ops_util.ts";

const FLOOD_MS = 5000;
const SOURCES = 8;
/** 8 KiB payloads: seven DATAGRAM fragments each, so the flood also exercises reassembly. */
const PAYLOAD = 8192;
const MiB = 1 << 20;

Deno.test("fault: a flood that outruns the backend; queues cap, drops are counted, memory stays bounded, service resumes", async () => {
  await using tunnel = await startFaultTunnel({ tcp: false });
  const procs = [tunnel.agent, tunnel.relay, tunnel.connector];
  const warm = numberedStream(tunnel.udpPort, 10);
  await waitFor("echoes before the flood", () => warm.received > 20, 15_000);
  await warm.stop(100);
  const before = await Promise.all(procs.map((p) => scrape(String(p.ready.metrics))));
  const rssBefore = procs.map((p) => procRss(p.pid));
  const rssPeak = [...rssBefore];
  const sampler = setInterval(() => {
    procs.forEach((p, i) => rssPeak[i] = Math.max(rssPeak[i], procRss(p.pid)));
  }, 100);

  // Several local clients (flows) send as fast as the test process can, unpaced.
  let offered = 0;
  const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: tunnel.udpPort };
  const floodEnd = performance.now() + FLOOD_MS;
  const flooders = Array.from({ length: SOURCES }, async (_, s) => {
    const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const payload = new Uint8Array(PAYLOAD).fill(s);
    // Replies are read and thrown away so this socket's buffer never stops the backend.
    const draining = (async () => {
      try {
        for (;;) await socket.receive();
      } catch {
        // Closed.
      }
    })();
    while (performance.now() < floodEnd) {
      await socket.send(payload, to).catch(() => {});
      offered++;
    }
    socket.close();
    await draining;
  });
  await Promise.all(flooders);
  const floodSeconds = FLOOD_MS / 1000;

  // Service resumes: a new flow gets (almost) every datagram through once the flood is over.
  const resumedFrom = performance.now();
  const echoedAt = await untilEcho(tunnel.udpPort, 10_000);
  // 10 s is a hang guard: that service resumes is asserted, how soon is only reported.
  assert.ok(echoedAt !== null, "no echo within 10 s of the flood's end");
  const firstEchoMs = echoedAt - resumedFrom;
  const after = numberedStream(tunnel.udpPort, 10);
  await new Promise((r) => setTimeout(r, 2000));
  const report = await after.stop(300);
  clearInterval(sampler);
  procs.forEach((p, i) => rssPeak[i] = Math.max(rssPeak[i], procRss(p.pid)));

  const now = await Promise.all(procs.map((p) => scrape(String(p.ready.metrics))));
  const delta = (i: number, name: string) => metricSum(now[i], name) - metricSum(before[i], name);
  const agentDrops = delta(0, "ztna_agent_drops_total");
  const relayDrops = delta(1, "ztna_relay_drops_total");
  const connectorDrops = delta(2, "ztna_connector_drops_total");
  const toRelay = metric(now[0], 'ztna_agent_datagrams_total{direction="to_relay"}') -
    metric(before[0], 'ztna_agent_datagrams_total{direction="to_relay"}');
  const toBackend = metric(now[2], 'ztna_connector_datagrams_total{direction="to_backend"}') -
    metric(before[2], 'ztna_connector_datagrams_total{direction="to_backend"}');
  const byReason = (i: number, name: string) =>
    Object.fromEntries(
      [...now[i]].filter(([k]) => k.startsWith(`${name}{`))
        .map(([k, v]) => [k.slice(name.length), v - (before[i].get(k) ?? 0)])
        .filter(([, v]) => (v as number) > 0),
    );
  const mb = (b: number) => `${(b / MiB).toFixed(1)} MiB`;
  console.log(
    `pool exhaustion: ${SOURCES} flows offered ${offered} × ${PAYLOAD} B in ${floodSeconds} s ` +
      `(${
        (offered * PAYLOAD / MiB / floodSeconds).toFixed(0)
      } MiB/s); agent forwarded ${toRelay}, ` +
      `connector delivered ${toBackend} to the backend\n` +
      `  drops: agent ${agentDrops} ${JSON.stringify(byReason(0, "ztna_agent_drops_total"))}, ` +
      `relay ${relayDrops} ${JSON.stringify(byReason(1, "ztna_relay_drops_total"))}, ` +
      `connector ${connectorDrops} ${JSON.stringify(byReason(2, "ztna_connector_drops_total"))}\n` +
      `  RSS before → peak: ${
        procs.map((p, i) => `${p.name} ${mb(rssBefore[i])} → ${mb(rssPeak[i])}`).join(", ")
      }\n` +
      `  after the flood: first echo in ${
        firstEchoMs.toFixed(0)
      } ms, then ${report.received}/${report.sent} echoed`,
  );
  assert.ok(offered > 0 && toBackend < offered, "the flood outran the path");
  assert.ok(
    agentDrops + relayDrops + connectorDrops > 0,
    "what could not be carried was counted",
  );
  procs.forEach((p, i) => {
    assert.ok(
      rssPeak[i] - rssBefore[i] < 128 * MiB,
      `${p.name} RSS grew by ${mb(rssPeak[i] - rssBefore[i])} during the flood`,
    );
  });
  assert.ok(report.received >= report.sent * 0.95, `${report.received}/${report.sent} echoed`);
});
