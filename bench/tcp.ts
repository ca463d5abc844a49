/**
 * `deno task bench:tcp`: TCP throughput with iperf3 (Debian's) as client and server, one
 * stream and 100 parallel streams, through: nothing (kernel loopback), ztna-edge
 * (agent → relay → connector over QUIC streams), an nginx `stream` TCP proxy and a stunnel4
 * TLS client + server pair. Then time to first byte of a new TCP flow (connect → first byte
 * of a server that speaks first) through the tunnel and directly.
 *
 * Flags: `--seconds=N` per iperf3 run (default 4), `--only=direct,ztna,ztna_portable,…`
 * (`ztna` runs on the batched UDP socket, `ztna_portable` on the portable one).
 *
 * @module
 */
import { join } from "node:path";
import {
  freePort,
  listenPort,
  median,
  percentile,
  progress,
  runPeer,
  sleep,
  startBenchTunnel,
  startPeer,
  writeResult,
} from "./bench_util.ts";
import { startNginxStream } from "./nginx_stream.ts";

const seconds = Number(Deno.args.find((a) => a.startsWith("--seconds="))?.slice(10) ?? 4);
const only = Deno.args.find((a) => a.startsWith("--only="))?.slice(7).split(",") ?? null;
// One iperf3 server per path: a run that leaves its server stuck cannot block the others.
const iperfPorts = Object.fromEntries(
  ["direct", "ztna", "ztna_portable", "nginx", "stunnel"].map((path) => [path, freePort()]),
);
const servers = Object.values(iperfPorts).map((port) =>
  startPeer("iperf3", ["-s", "-B", "127.0.0.1", "-p", String(port)])
);
const banner = startBanner();
const cleanups: (() => Promise<void>)[] = [
  ...servers.map((server) => () => server.kill()),
  () => banner.close(),
];
const results: Record<string, unknown>[] = [];
const ttfb: Record<string, unknown>[] = [];
try {
  await sleep(300);
  // The tunnel on each UDP socket kind, so before (portable) and after come from one run.
  const tunnelOn = async (udpSocket: "batched" | "portable") => {
    // Each its own iperf3 server: one still draining a run (data buffered in the tunnel)
    // would answer the next run "busy".
    const iperfPort = udpSocket === "batched" ? iperfPorts.ztna : iperfPorts.ztna_portable;
    const tunnel = await startBenchTunnel({
      services: {
        iperf: [`tcp://127.0.0.1:${iperfPort}`],
        banner: [`tcp://127.0.0.1:${banner.port}`],
      },
      forwards: [
        { listen: "tcp://127.0.0.1:0", service: "iperf" },
        { listen: "tcp://127.0.0.1:0", service: "banner" },
      ],
      limits: { flows_per_connection: 4096 },
      udpSocket,
    });
    cleanups.unshift(() => tunnel.stop());
    return tunnel;
  };
  const tunnel = await tunnelOn("batched");
  const portable = await tunnelOn("portable");
  const nginx = await startNginxStream("tcp", iperfPorts.nginx);
  cleanups.unshift(() => nginx.stop());
  const nginxPort = nginx.port;
  const stunnelPort = await startStunnelPair(iperfPorts.stunnel, tunnel.pki.dir, cleanups);
  const paths: Record<string, number> = {
    direct: iperfPorts.direct,
    nginx: nginxPort,
    stunnel: stunnelPort,
    ztna: listenPort(tunnel.listen[0]),
    ztna_portable: listenPort(portable.listen[0]),
  };
  for (const [path, port] of Object.entries(paths)) {
    if (only !== null && !only.includes(path)) continue;
    for (const parallel of [1, 100]) {
      const row = await iperfRun(path, port, parallel);
      progress(row);
      results.push(row);
    }
  }
  for (
    const [path, port] of [["direct", banner.port], ["ztna", listenPort(tunnel.listen[1])]] as const
  ) {
    const samples: number[] = [];
    let error: string | null = null;
    for (let i = 0; i < 30 && error === null; i++) {
      try {
        samples.push(await timeToFirstByte(port));
      } catch (e) {
        error = String(e).slice(0, 200);
      }
    }
    let serverFirst: string;
    try {
      serverFirst = `ok in ${(await timeToFirstByte(port, false, 3000)).toFixed(1)} ms`;
    } catch (e) {
      serverFirst = `no byte within 3 s (${String(e).slice(0, 80)})`;
    }
    const row = {
      path,
      server_speaks_first: serverFirst,
      error,
      samples: samples.length,
      p50_ms: Number(median(samples).toFixed(3)),
      p99_ms: Number(percentile(samples, 99).toFixed(3)),
    };
    progress("ttfb", row);
    ttfb.push(row);
  }
} finally {
  for (const cleanup of cleanups) await cleanup().catch(() => {});
}
await writeResult("tcp", { seconds, results, ttfb });

async function iperfRun(path: string, port: number, parallel: number) {
  try {
    const out = await runPeer("iperf3", [
      "-c",
      "127.0.0.1",
      "-p",
      String(port),
      "-t",
      String(seconds),
      "-P",
      String(parallel),
      "-J",
      "--connect-timeout",
      "5000",
    ], (seconds + 30) * 1000);
    const report = JSON.parse(out);
    const received = report.end?.sum_received?.bits_per_second ?? 0;
    return { path, parallel, mbps: Math.round(received / 1e6), error: report.error ?? null };
  } catch (error) {
    return { path, parallel, mbps: 0, error: String(error).slice(0, 300) };
  }
}

/** A TCP server that writes one byte to every new connection (it speaks first). */
function startBanner() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of listener) {
      conn.write(new Uint8Array([42])).catch(() => {}).finally(() => {
        setTimeout(() => {
          try {
            conn.close();
          } catch {
            // Closed by the client already.
          }
        }, 1000);
      });
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      await serving;
    },
  };
}

/**
 * Milliseconds from `connect()` to the first byte of the banner server. With `clientFirst`
 * the client writes one byte right after connecting (a flow that opens only on client data
 * still gets measured); without it, this checks that a server-speaks-first protocol works.
 */
async function timeToFirstByte(port: number, clientFirst = true, ms = 10_000): Promise<number> {
  const started = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const buffer = new Uint8Array(1);
  if (clientFirst) await conn.write(new Uint8Array([1]));
  const timer = setTimeout(() => conn.close(), ms);
  try {
    const n = await conn.read(buffer);
    if (n !== 1) throw new Error("no first byte");
    return performance.now() - started;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
}

/** stunnel4 server (TLS → backend) and client (plain → TLS); returns the client's port. */
async function startStunnelPair(
  backendPort: number,
  pkiDir: string,
  cleanups: (() => Promise<void>)[],
) {
  const dir = await Deno.makeTempDir({ prefix: "ztna-bench-stunnel-" });
  const serverPort = freePort();
  const clientPort = freePort();
  const common = "foreground = yes\npid =\nsyslog = no\ndebug = 3\n";
  await Deno.writeTextFile(
    join(dir, "server.conf"),
    `${common}[server]\naccept = 127.0.0.1:${serverPort}\nconnect = 127.0.0.1:${backendPort}\n` +
      `cert = ${join(pkiDir, "relay.pem")}\nkey = ${join(pkiDir, "relay.key")}\n`,
  );
  await Deno.writeTextFile(
    join(dir, "client.conf"),
    `${common}[client]\nclient = yes\naccept = 127.0.0.1:${clientPort}\n` +
      `connect = 127.0.0.1:${serverPort}\nCAfile = ${join(pkiDir, "ca.pem")}\n` +
      `verifyChain = yes\ncheckHost = localhost\n`,
  );
  const server = startPeer("stunnel4", [join(dir, "server.conf")]);
  const client = startPeer("stunnel4", [join(dir, "client.conf")]);
  cleanups.unshift(async () => {
    await client.kill();
    await server.kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  });
  await sleep(500);
  return clientPort;
}
