/**
 * `deno task bench:udp`: UDP throughput and loss through agent → relay → connector → sink,
 * one way and echo, for 64 B, 1200 B and 8 KiB payloads, stepping the offered load; plus
 * the same load tool straight at the sink (the ceiling of the tool itself).
 *
 * Flags: `--only=1200:oneway` (size:mode, comma-separated) runs a subset, e.g. while
 * profiling; `--cpu` adds the CPU seconds relay, connector and agent spent per series.
 *
 * @module
 */
import { scrape } from "../test/_support/harness.ts";
import { cpuSeconds, listenPort, progress, startBenchTunnel, writeResult } from "./bench_util.ts";
import { startUdpSink } from "./udp_sink.ts";
import { ratesFor, runSeries, type SeriesResult } from "./udp_series.ts";

const only = Deno.args.find((a) => a.startsWith("--only="))?.slice(7).split(",") ?? null;
const withCpu = Deno.args.includes("--cpu");
const sizes = [64, 1200, 8192];
const modes = ["oneway", "echo"] as const;

const sink = startUdpSink();
const tunnel = await startBenchTunnel({
  services: { sink: [`udp://127.0.0.1:${sink.port}`] },
  forwards: [{ listen: "udp://127.0.0.1:0", service: "sink" }],
});
const results: Record<string, unknown>[] = [];
try {
  const agentTarget = `127.0.0.1:${listenPort(tunnel.listen[0])}`;
  for (const size of sizes) {
    for (const mode of modes) {
      if (only !== null && !only.includes(`${size}:${mode}`)) continue;
      sink.echo = mode === "echo";
      const pids = [tunnel.relay.pid, tunnel.connector.pid, tunnel.agent.pid];
      const before = pids.map(cpuSeconds);
      const series = await runSeries({
        target: agentTarget,
        size,
        rates: ratesFor(size),
        echo: mode === "echo",
        sink,
      });
      const cpu = pids.map((pid, i) => Number((cpuSeconds(pid) - before[i]).toFixed(2)));
      const drops = await dropCounters();
      progress(
        `ztna ${size} B ${mode}: max ${series.maxRate}/s (${series.maxMbps} Mbit/s)`,
        steps(series),
        drops,
      );
      results.push({
        path: "ztna",
        mode,
        ...series,
        drops,
        ...(withCpu ? { cpu: { relay: cpu[0], connector: cpu[1], agent: cpu[2] } } : {}),
      });
    }
  }
  // The same generator straight at the sink: what the tool and sink manage without a tunnel.
  if (only === null || only.includes("direct")) {
    sink.echo = false;
    const direct = await runSeries({
      target: `127.0.0.1:${sink.port}`,
      size: 1200,
      rates: [10_000, 20_000, 40_000, 60_000, 80_000, 100_000],
      echo: false,
      sink,
      warmup: 0,
    });
    progress(`direct 1200 B oneway: max ${direct.maxRate}/s`, steps(direct));
    results.push({ path: "direct", mode: "oneway", ...direct });
  }
} finally {
  await tunnel.stop();
  await sink.close();
}
await writeResult("udp", { results });

/** Every non-zero drop counter of the three components (cumulative), to see which hop lost. */
async function dropCounters(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const proc of [tunnel.relay, tunnel.connector, tunnel.agent]) {
    const samples = await scrape(String(proc.ready.metrics)).catch(() => new Map());
    for (const [key, value] of samples) {
      if (/drop/.test(key) && value > 0) out[key] = value;
    }
  }
  return out;
}

function steps(series: SeriesResult): string {
  return series.steps.map((s) => `${s.rate}:${(100 * s.loss).toFixed(1)}%`).join(" ");
}
