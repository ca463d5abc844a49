/**
 * `deno task bench:udp`: UDP throughput and loss through agent → relay → connector → sink,
 * one way and echo, for 64 B, 1200 B and 8 KiB payloads, stepping the offered load; plus
 * the same load tool straight at the sink (the ceiling of the tool itself).
 *
 * Flags: `--only=1200:oneway,burst,direct` (size:mode, `burst`, `direct`; comma-separated)
 * runs a subset; `--socket=batched` runs one socket kind (default both, portable first, so
 * before and after come from one run); `--cpu` adds the CPU seconds relay, connector and
 * agent spent per series. The burst mode sends 50 datagrams of 1 B to 8 KiB back to back,
 * 60 times, and counts what the sink lost.
 *
 * @module
 */
import { portOf, scrape } from "../test/_support/harness.ts";
import { waitFor } from "../test/_support/wait.ts";
import { openUdpSocket, udpTarget } from "../shared/quic/udp_socket.ts";
import {
  type BenchTunnel,
  cpuSeconds,
  listenPort,
  progress,
  startBenchTunnel,
  writeResult,
} from "./bench_util.ts";
import { startUdpSink, type UdpSink } from "./udp_sink.ts";
import { ratesFor, runSeries, type SeriesResult } from "./udp_series.ts";

const only = Deno.args.find((a) => a.startsWith("--only="))?.slice(7).split(",") ?? null;
const withCpu = Deno.args.includes("--cpu");
const kinds = (Deno.args.find((a) => a.startsWith("--socket="))?.slice(9) ?? "portable,batched")
  .split(",") as ("portable" | "batched")[];
/** Datagrams per burst, sent back to back. */
const BURST = 50;
/** Bursts per run. */
const ROUNDS = 60;

const sizes = [64, 1200, 8192];
const modes = ["oneway", "echo"] as const;
const wanted = (name: string) => only === null || only.includes(name);

const sink = startUdpSink();
const results: Record<string, unknown>[] = [];
let tunnel: BenchTunnel | undefined;
try {
  // The same series once per socket kind, in one run: "before" (portable) and "after".
  for (const kind of kinds) {
    tunnel = await startBenchTunnel({
      services: { sink: [`udp://127.0.0.1:${sink.port}`] },
      forwards: [{ listen: "udp://127.0.0.1:0", service: "sink" }],
      udpSocket: kind,
    });
    const agentTarget = `127.0.0.1:${listenPort(tunnel.listen[0])}`;
    for (const size of sizes) {
      for (const mode of modes) {
        if (!wanted(`${size}:${mode}`)) continue;
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
        const drops = await dropCounters(tunnel);
        progress(
          `ztna (${kind}) ${size} B ${mode}: max ${series.maxRate}/s (${series.maxMbps} Mbit/s)`,
          steps(series),
          drops,
        );
        results.push({
          path: "ztna",
          socket: kind,
          mode,
          ...series,
          drops,
          ...(withCpu ? { cpu: { relay: cpu[0], connector: cpu[1], agent: cpu[2] } } : {}),
        });
      }
    }
    if (wanted("burst")) {
      sink.echo = false;
      const burst = await runBursts(agentTarget, sink);
      const drops = await dropCounters(tunnel);
      progress(
        `ztna (${kind}) burst ${BURST} x 1 B-8 KiB, ${ROUNDS} rounds: ${burst.lost} of ${burst.sent} lost`,
        drops,
      );
      results.push({ path: "ztna", socket: kind, mode: "burst", ...burst, drops });
    }
    await tunnel.stop();
    tunnel = undefined;
  }
  // The same generator straight at the sink: what the tool and sink manage without a tunnel.
  if (wanted("direct")) {
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
  await tunnel?.stop();
  await sink.close();
}
await writeResult("udp", { results });

/**
 * Sends {@linkcode ROUNDS} bursts of {@linkcode BURST} datagrams from 1 B to 8 KiB, all in one
 * event-loop turn (one batch on the wire), waiting after each for the sink to count them.
 */
async function runBursts(
  target: string,
  counter: UdpSink,
): Promise<{ sent: number; lost: number; lostByRound: number[] }> {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), portOf(`udp://${target}`)];
  const to = udpTarget(host, port);
  const socket = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    sendBufferBytes: 8192,
    onPacket() {},
  });
  const sizes = Array.from({ length: BURST }, (_, i) => 1 + Math.floor(i * 8191 / (BURST - 1)));
  const payload = new Uint8Array(8192);
  // Opens the agent's flow, then waits until the sink has heard nothing for 1 s (bounded), so
  // that what an earlier series left queued in the tunnel is not counted as a burst's.
  const opened = counter.packets;
  socket.send(payload.subarray(0, 1), to);
  await waitFor("the flow to open", () => counter.packets > opened, 10_000).catch(() => {});
  let heard = counter.packets;
  let quietSince = performance.now();
  await waitFor("the tunnel to drain", () => {
    if (counter.packets !== heard) {
      heard = counter.packets;
      quietSince = performance.now();
    }
    return performance.now() - quietSince >= 1000;
  }, 20_000).catch(() => {});
  const lostByRound: number[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const before = counter.packets;
      for (const size of sizes) socket.send(payload.subarray(0, size), to);
      await waitFor("the burst", () => counter.packets - before >= BURST, 500).catch(() => {});
      lostByRound.push(BURST - (counter.packets - before));
    }
  } finally {
    socket.close();
  }
  const lost = lostByRound.reduce((a, b) => a + b, 0);
  return { sent: BURST * ROUNDS, lost, lostByRound };
}

/** Every non-zero drop counter of the three components (cumulative), to see which hop lost. */
async function dropCounters(tunnel: BenchTunnel): Promise<Record<string, number>> {
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
