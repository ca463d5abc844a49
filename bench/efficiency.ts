/**
 * `deno task bench:efficiency`: relay CPU microseconds per relayed datagram (from
 * `/proc/<pid>/stat` across a fixed count of 1200 B datagrams, one way) divided by the cost
 * of one quiche encrypt + decrypt (with ACKs) measured in this process with the same
 * binding. The ratio is the JS overhead the relay adds. Connector and agent costs per
 * datagram are reported alongside.
 *
 * Flags: `--count=N` (default 30000), `--rate=R` datagrams/s (default: 3000, then 8000),
 * `--socket=portable,batched` (the UDP socket kinds to compare, in this order; default both).
 *
 * @module
 */
import { metric, scrape } from "../test/_support/harness.ts";
import { cpuSeconds, listenPort, progress, startBenchTunnel, writeResult } from "./bench_util.ts";
import { measureQuicheCost } from "./quiche_cost.ts";
import { startUdpSink } from "./udp_sink.ts";
import { runSeries } from "./udp_series.ts";

const flag = (name: string, fallback: number) =>
  Number(Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const count = flag("count", 30_000);
// At a low rate every packet wakes an idle process; at a higher one wake-ups are shared.
const rates = Deno.args.some((a) => a.startsWith("--rate=")) ? [flag("rate", 3000)] : [3000, 8000];
const size = 1200;
const kinds = (Deno.args.find((a) => a.startsWith("--socket="))?.slice(9) ?? "portable,batched")
  .split(",") as ("portable" | "batched")[];

const quicheCost = await measureQuicheCost(100_000, size);
progress("quiche in-process", quicheCost);

const sink = startUdpSink();
const rows: Record<string, unknown>[] = [];
for (const kind of kinds) {
  const tunnel = await startBenchTunnel({
    services: { sink: [`udp://127.0.0.1:${sink.port}`] },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "sink" }],
    udpSocket: kind,
  });
  try {
    const relayed = async () =>
      metric(
        await scrape(String(tunnel.relay.ready.metrics)),
        'ztna_relay_datagrams_relayed_total{direction="to_connector"}',
      );
    const forwarded = async () =>
      metric(
        await scrape(String(tunnel.connector.ready.metrics)),
        'ztna_connector_datagrams_total{direction="to_backend"}',
      );
    // Open the flow first so setup costs are outside the measured window.
    await runSeries({
      target: `127.0.0.1:${listenPort(tunnel.listen[0])}`,
      size,
      rates: [200],
      echo: false,
      sink,
      stepMs: 500,
    });
    const pids = [tunnel.relay.pid, tunnel.connector.pid, tunnel.agent.pid];
    for (const rate of rates) {
      const relayedBefore = await relayed();
      const forwardedBefore = await forwarded();
      const cpuBefore = pids.map(cpuSeconds);
      const series = await runSeries({
        target: `127.0.0.1:${listenPort(tunnel.listen[0])}`,
        size,
        rates: [rate],
        echo: false,
        sink,
        stepMs: Math.round(count / rate * 1000),
        warmup: 0,
        stopAboveLoss: 1,
      });
      const cpu = pids.map((pid, i) => cpuSeconds(pid) - cpuBefore[i]);
      const relayedCount = (await relayed()) - relayedBefore;
      const forwardedCount = (await forwarded()) - forwardedBefore;
      const step = series.steps[0];
      const perDatagram = (seconds: number, n: number) => Number((seconds * 1e6 / n).toFixed(1));
      const relayMicros = perDatagram(cpu[0], relayedCount);
      const row = {
        socket: kind,
        size,
        offered: step.sent,
        rate,
        loss: Number(step.loss.toFixed(4)),
        relayed: relayedCount,
        micros_per_datagram: {
          relay: relayMicros,
          connector: perDatagram(cpu[1], forwardedCount),
          agent: perDatagram(cpu[2], step.sent),
        },
        ratio: Number((relayMicros / quicheCost.cpuMicros).toFixed(2)),
      };
      progress(row);
      rows.push(row);
    }
  } finally {
    await tunnel.stop();
  }
}
await sink.close();
await writeResult("efficiency", { quiche: quicheCost, rows });
