/**
 * `deno task bench:profile`: CPU profiles of relay, connector and agent under a steady
 * one-way UDP load (1200 B at `--rate=R`, default 3000/s, for `--seconds=S`, default 8).
 * Writes `.state/bench/<component>.cpuprofile` (open in Chrome DevTools) and prints the
 * functions with the most self time.
 *
 * @module
 */
import { join } from "node:path";
import { PROJECT_ROOT } from "../tools/permissions.ts";
import { listenPort, progress, startBenchTunnel, writeResult } from "./bench_util.ts";
import { type HotFunction, startProfile } from "./cpu_profile.ts";
import { startUdpSink } from "./udp_sink.ts";
import { runSeries } from "./udp_series.ts";

const flag = (name: string, fallback: number) =>
  Number(Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const rate = flag("rate", 3000);
const seconds = flag("seconds", 8);

const sink = startUdpSink();
const inspect = ["--inspect=127.0.0.1:0"];
const tunnel = await startBenchTunnel({
  services: { sink: [`udp://127.0.0.1:${sink.port}`] },
  forwards: [{ listen: "udp://127.0.0.1:0", service: "sink" }],
  flags: { relay: inspect, connector: inspect, agent: inspect },
});
const tops: Record<string, HotFunction[]> = {};
try {
  const target = `127.0.0.1:${listenPort(tunnel.listen[0])}`;
  await runSeries({ target, size: 1200, rates: [200], echo: false, sink, stepMs: 500 });
  const procs = [tunnel.relay, tunnel.connector, tunnel.agent];
  const captures = await Promise.all(procs.map(startProfile));
  const series = await runSeries({
    target,
    size: 1200,
    rates: [rate],
    echo: false,
    sink,
    stepMs: seconds * 1000,
    warmup: 0,
    stopAboveLoss: 1,
  });
  const dir = join(PROJECT_ROOT, ".state", "bench");
  await Deno.mkdir(dir, { recursive: true });
  for (let i = 0; i < procs.length; i++) {
    const { profile, top } = await captures[i].stop();
    await Deno.writeTextFile(join(dir, `${procs[i].name}.cpuprofile`), JSON.stringify(profile));
    tops[procs[i].name] = top;
    progress(`${procs[i].name}:\n` + top.map((t) => `  ${t.selfPercent}%  ${t.where}`).join("\n"));
  }
  progress(`loss ${(100 * series.steps[0].loss).toFixed(2)}% at ${rate}/s`);
} finally {
  await tunnel.stop();
  await sink.close();
}
await writeResult("profile", { rate, seconds, top: tops });
