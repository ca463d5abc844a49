/**
 * `deno task bench:flows`: many TCP flows through one agent connection.
 *
 * 1. `--flows=N` (default 200) connections at once, each writing `--kib=K` (default 1024)
 *    KiB to a TCP echo backend and reading it all back: total time, Mbit/s both ways, and
 *    fairness (the share of its bytes every flow had when the first one was done).
 * 2. 20 downloads whose clients never read: once the relay stops moving bytes, the CPU time
 *    each component spends in 5 s (stalled flows should cost nothing).
 * 3. 50 uploads into a backend that never reads: the peak growth of each component's RSS
 *    over 20 s (what flow control lets a flooding client make the path hold).
 *
 * @module
 */
import { metric, scrape } from "../test/_support/harness.ts";
import { echoTcp, startTcpServer } from "../test/_support/tcp_util.ts";
import {
  cpuSeconds,
  listenPort,
  progress,
  round,
  rssBytes,
  sleep,
  startBenchTunnel,
  writeResult,
} from "./bench_util.ts";

const arg = (name: string, fallback: number) =>
  Number(Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const flows = arg("flows", 200);
const perFlow = arg("kib", 1024) * 1024;

const echo = startTcpServer(echoTcp);
// A backend that writes to every connection until it is closed.
const flood = startTcpServer(async (conn) => {
  const block = new Uint8Array(65_536);
  for (;;) await conn.write(block);
});
// A backend that accepts and never reads (its connections stay open until released).
const sinkReleases: (() => void)[] = [];
const sink = startTcpServer(() => new Promise<void>((resolve) => sinkReleases.push(resolve)));
const tunnel = await startBenchTunnel({
  services: {
    echo: [`tcp://127.0.0.1:${echo.port}`],
    flood: [`tcp://127.0.0.1:${flood.port}`],
    sink: [`tcp://127.0.0.1:${sink.port}`],
  },
  forwards: [
    { listen: "tcp://127.0.0.1:0", service: "echo" },
    { listen: "tcp://127.0.0.1:0", service: "flood" },
    { listen: "tcp://127.0.0.1:0", service: "sink" },
  ],
});
try {
  const [echoPort, floodPort, sinkPort] = tunnel.listen.map(listenPort);

  // 1. Concurrent echo flows.
  const received = new Array<number>(flows).fill(0);
  let firstDone: number[] | undefined;
  const started = performance.now();
  await Promise.all(Array.from({ length: flows }, async (_, i) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: echoPort });
    try {
      const block = new Uint8Array(65_536).fill(i & 0xff);
      const sending = (async () => {
        for (let left = perFlow; left > 0;) {
          left -= await conn.write(block.subarray(0, Math.min(left, block.length)));
        }
        await conn.closeWrite();
      })();
      const buffer = new Uint8Array(65_536);
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        received[i] += n;
      }
      firstDone ??= [...received];
      await sending;
      if (received[i] !== perFlow) throw new Error(`flow ${i}: ${received[i]} of ${perFlow} bytes`);
    } finally {
      conn.close();
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  const shares = firstDone!.map((b) => b / perFlow).sort((a, b) => a - b);
  const concurrent = {
    flows,
    kib_per_flow: perFlow / 1024,
    seconds: round(seconds),
    mbps_both_ways: round((2 * flows * perFlow * 8) / seconds / 1e6),
    fairness_min_share: round(shares[0]),
    fairness_median_share: round(shares[shares.length >> 1]),
  };
  progress("concurrent", concurrent);

  // 2. Stalled downloads.
  const stalled = await Promise.all(
    Array.from({ length: 20 }, () => Deno.connect({ hostname: "127.0.0.1", port: floodPort })),
  );
  let last = -1;
  let stalledAfter = 0;
  for (let i = 1; i <= 90; i++) {
    await sleep(1000);
    const samples = await scrape(String(tunnel.relay.ready.metrics));
    const moved = metric(samples, 'ztna_relay_bytes_relayed_total{direction="to_agent"}');
    if (moved === last) {
      stalledAfter = i;
      break;
    }
    last = moved;
  }
  const procs = [tunnel.relay, tunnel.connector, tunnel.agent];
  const before = procs.map((p) => cpuSeconds(p.pid));
  await sleep(5000);
  const cpu = Object.fromEntries(
    procs.map((p, i) => [p.name, round(cpuSeconds(p.pid) - before[i])]),
  );
  for (const conn of stalled) conn.close();
  const idle = { downloads: 20, stalled_after_s: stalledAfter, cpu_seconds_in_5_s: cpu };
  progress("stalled", idle);

  // 3. Uploads into a backend that never reads.
  const procs3 = [tunnel.relay, tunnel.connector, tunnel.agent];
  const rssBefore = procs3.map((p) => rssBytes(p.pid));
  const peak = rssBefore.slice();
  const uploads = await Promise.all(
    Array.from({ length: 50 }, () => Deno.connect({ hostname: "127.0.0.1", port: sinkPort })),
  );
  let accepted = 0;
  const block = new Uint8Array(65_536);
  for (const conn of uploads) {
    (async () => {
      for (;;) {
        const n = await conn.write(block);
        accepted += n;
      }
    })().catch(() => {});
  }
  for (let i = 0; i < 20; i++) {
    await sleep(1000);
    procs3.forEach((p, j) => peak[j] = Math.max(peak[j], rssBytes(p.pid)));
  }
  for (const conn of uploads) conn.close();
  const flooded = {
    uploads: 50,
    mib_accepted_by_the_tunnel: round(accepted / 1048576),
    rss_growth_mib: Object.fromEntries(
      procs3.map((p, j) => [p.name, round((peak[j] - rssBefore[j]) / 1048576)]),
    ),
  };
  progress("flooded", flooded);
  await writeResult("tcp_flows", { concurrent, stalled: idle, flooded });
} finally {
  for (const release of sinkReleases) release();
  await tunnel.stop();
  await Promise.allSettled([echo.close(), flood.close(), sink.close()]);
}
