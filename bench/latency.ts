/**
 * `deno task bench:latency`: round-trip time p50/p99/p99.9 of 1200 B datagrams through
 * agent → relay → connector → echo and back, against the same load sent straight to the
 * echo backend and through an nginx `stream` UDP proxy, at 1,000 datagrams/s and at 50% of
 * the tunnel's echo maximum (found first by stepping the load, or given with `--max=N`). The
 * tunnel runs twice, on the batched UDP socket (`ztna`) and on the portable one
 * (`ztna_portable`), so before and after come from one run.
 *
 * @module
 */
import { listenPort, progress, startBenchTunnel, writeResult } from "./bench_util.ts";
import { startNginxStream } from "./nginx_stream.ts";
import { startUdpSink } from "./udp_sink.ts";
import { runSeries } from "./udp_series.ts";

const givenMax = Number(Deno.args.find((a) => a.startsWith("--max="))?.slice(6) ?? 0);
const size = 1200;
const echo = startUdpSink(true);
// The tunnel on each UDP socket kind: `ztna` is batched, `ztna_portable` the fallback.
const tunnelOn = (udpSocket: "batched" | "portable") =>
  startBenchTunnel({
    services: { echo: [`udp://127.0.0.1:${echo.port}`] },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    udpSocket,
  });
const tunnel = await tunnelOn("batched");
const portable = await tunnelOn("portable");
const nginx = await startNginxStream("udp", echo.port);
const rows: Record<string, unknown>[] = [];
try {
  const targets: Record<string, string> = {
    direct: `127.0.0.1:${echo.port}`,
    ztna: `127.0.0.1:${listenPort(tunnel.listen[0])}`,
    ztna_portable: `127.0.0.1:${listenPort(portable.listen[0])}`,
    nginx: `127.0.0.1:${nginx.port}`,
  };
  let max = givenMax;
  if (max === 0) {
    const series = await runSeries({
      target: targets.ztna,
      size,
      rates: [2000, 5000, 8000, 11_000, 14_000, 17_000, 20_000, 25_000],
      echo: true,
      stepMs: 1000,
    });
    // Under heavy contention even the first step may lose more than 1%: then use the best
    // step within 5% loss so that "half of max" still means something.
    max = series.maxRate ||
      Math.max(0, ...series.steps.filter((s) => s.loss <= 0.05).map((s) => s.rate));
    progress(`tunnel echo max ${max}/s`);
  }
  const half = Math.max(1000, Math.round(max / 2));
  const rates = [...new Set([1000, half])];
  // One warm-up second per path (JIT, flow setup) that is not measured.
  for (const target of Object.values(targets)) {
    await runSeries({ target, size, rates: [1000], echo: true, stepMs: 1000, stopAboveLoss: 1 });
  }
  for (const rate of rates) {
    for (const [path, target] of Object.entries(targets)) {
      const series = await runSeries({
        target,
        size,
        rates: [rate],
        echo: true,
        stepMs: 4000,
        stopAboveLoss: 1,
      });
      const step = series.steps[0];
      const row = { path, rate, loss: Number(step.loss.toFixed(4)), rtt_ms: step.rtt };
      progress(row);
      rows.push(row);
    }
  }
  const added = (rate: number, path: string) => {
    const direct = rows.find((r) => r.path === "direct" && r.rate === rate)!.rtt_ms as Record<
      string,
      number
    >;
    const other = rows.find((r) => r.path === path && r.rate === rate)!.rtt_ms as Record<
      string,
      number
    >;
    return {
      path,
      rate,
      p50: Number((other.p50 - direct.p50).toFixed(3)),
      p99: Number((other.p99 - direct.p99).toFixed(3)),
      p999: Number((other.p999 - direct.p999).toFixed(3)),
    };
  };
  const addedRows = rates.flatMap((rate) => [
    added(rate, "ztna"),
    added(rate, "ztna_portable"),
    added(rate, "nginx"),
  ]);
  await writeResult("latency", { size, echo_max: max, rows, added_ms: addedRows });
} finally {
  await nginx.stop();
  await tunnel.stop();
  await portable.stop();
  await echo.close();
}
