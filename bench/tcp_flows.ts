/**
 * `deno task bench:flows`: many TCP flows through one agent connection.
 *
 * 1. `--flows=N` (default 200) connections at once, each writing `--kib=K` (default 1024)
 *    KiB to a TCP echo backend and reading it all back: total time, Mbit/s both ways, and
 *    fairness (the share of its bytes every flow had when the first one was done).
 * 2. 20 downloads whose clients never read: once the relay stops moving bytes, the CPU time
 *    each component spends in 5 s (stalled flows should cost nothing).
 *
 * @module
 */
import { metric, scrape } from "../test/harness.ts";
import { echoTcp, startTcpServer } from "../test/tcp_util.ts";
import {
  cpuSeconds,
  listenPort,
  progress,
  round,
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
const tunnel = await startBenchTunnel({
  services: {
    echo: [`tcp://127.0.0.1:${echo.port}`],
    flood: [`tcp://127.0.0.1:${flood.port}`],
  },
  forwards: [
    { listen: "tcp://127.0.0.1:0", service: "echo" },
    { listen: "tcp://127.0.0.1:0", service: "flood" },
  ],
});
try {
  const [echoPort, floodPort] = tunnel.listen.map(listenPort);

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
  await writeResult("tcp_flows", { concurrent, stalled: idle });
} finally {
  await tunnel.stop();
  await Promise.allSettled([echo.close(), flood.close()]);
}
