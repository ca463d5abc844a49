/**
 * `deno task bench:peers`: the UDP and QUIC peers the tunnel is compared with, measured in
 * the same run as the other benches: iperf3 UDP straight over loopback (the kernel limit,
 * 1200 B datagrams, unlimited rate), an nginx `stream` UDP proxy with the same generator and
 * sink as `bench:udp` (1200 B, one way), the tunnel itself on both UDP socket kinds against
 * the same sink (so its ratio to nginx comes from one run), and `@matrixai/quic`'s high-level
 * stream echo.
 * (TCP peers, iperf3 direct, nginx TCP and stunnel4, are in `bench:tcp`.)
 *
 * @module
 */
import {
  freePort,
  listenPort,
  progress,
  runPeer,
  sleep,
  startBenchTunnel,
  startPeer,
  writeResult,
} from "./bench_util.ts";
import { startNginxStream } from "./nginx_stream.ts";
import { measureMatrixaiStreamEcho } from "./quic_peer.ts";
import { startUdpSink } from "./udp_sink.ts";
import { ratesFor, runSeries } from "./udp_series.ts";

const result: Record<string, unknown> = {};

// Kernel limit: iperf3 UDP, one hop, no proxy.
{
  const port = freePort();
  const server = startPeer("iperf3", ["-s", "-B", "127.0.0.1", "-p", String(port), "-1"]);
  try {
    await sleep(300);
    const out = JSON.parse(
      await runPeer("iperf3", [
        "-c",
        "127.0.0.1",
        "-p",
        String(port),
        "-u",
        "-b",
        "0",
        "-l",
        "1200",
        "-t",
        "3",
        "-J",
      ], 30_000),
    );
    const sum = out.end.sum;
    const received = sum.packets * (1 - sum.lost_percent / 100);
    result.iperf3_udp_direct = {
      size: 1200,
      datagrams_per_s: Math.round(received / sum.seconds),
      mbps: Math.round(received * 1200 * 8 / sum.seconds / 1e6),
      lost_percent: Number(sum.lost_percent.toFixed(2)),
    };
    progress("iperf3 udp direct", result.iperf3_udp_direct);
  } finally {
    await server.kill();
  }
}

// Plain UDP proxy: nginx stream, same generator and sink as the tunnel.
{
  const sink = startUdpSink();
  const nginx = await startNginxStream("udp", sink.port);
  try {
    const series = await runSeries({
      target: `127.0.0.1:${nginx.port}`,
      size: 1200,
      rates: ratesFor(1200),
      echo: false,
      sink,
    });
    result.nginx_udp_oneway_1200 = series;
    progress(`nginx udp 1200 B one way: max ${series.maxRate}/s`);
  } finally {
    await nginx.stop();
    await sink.close();
  }
}

// The tunnel in the same run, on each socket kind, so the ratio to nginx comes from one run.
{
  const sink = startUdpSink();
  try {
    for (const kind of ["portable", "batched"] as const) {
      const tunnel = await startBenchTunnel({
        services: { sink: [`udp://127.0.0.1:${sink.port}`] },
        forwards: [{ listen: "udp://127.0.0.1:0", service: "sink" }],
        udpSocket: kind,
      });
      try {
        const series = await runSeries({
          target: `127.0.0.1:${listenPort(tunnel.listen[0])}`,
          size: 1200,
          rates: ratesFor(1200),
          echo: false,
          sink,
        });
        const nginx = (result.nginx_udp_oneway_1200 as { maxRate: number }).maxRate;
        result[`ztna_${kind}_udp_oneway_1200`] = {
          ...series,
          ratio_to_nginx: nginx > 0 ? Number((series.maxRate / nginx).toFixed(2)) : null,
        };
        progress(`ztna (${kind}) udp 1200 B one way: max ${series.maxRate}/s (nginx ${nginx}/s)`);
      } finally {
        await tunnel.stop();
      }
    }
  } finally {
    await sink.close();
  }
}

// The high-level QUIC API of the binding we use.
result.matrixai_quic_stream_echo = await measureMatrixaiStreamEcho(5);
progress("@matrixai/quic stream echo", result.matrixai_quic_stream_echo);

await writeResult("peers", result);
// The high-level QUIC library keeps handles open after stop; the result is written.
Deno.exit(0);
