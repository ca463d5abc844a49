/**
 * Soak (`deno task soak [--minutes N]`, default 10; not part of `deno task test`): a relay,
 * connector and agent carry steady mixed traffic — a numbered UDP stream at 100 datagrams/s
 * and a 1 MiB checksum-verified TCP upload every 5 s — while both dialers lose their relay
 * every 45 s (a 4 s black-hole of the path with a 3 s idle timeout, then a reconnect).
 * Every 15 s it samples each component's RSS, V8 heap, open fds (`/proc/<pid>/fd`) and
 * event-loop lag; each minute it prints a row. At the end it fits a line through the samples
 * after the first minute (warm-up) and fails when any slope exceeds its threshold.
 *
 * @module
 */
import { startFaultTunnel } from "../_support/fault_util.ts";
import { linearSlope, type ProcessSample, sampleProcess } from "../_support/fault_util.ts";
import { numberedStream } from "../_support/ops_util.ts";
import {
  patternChunks,
  patternSha256,
  readAll,
  withTimeout,
  writeAll,
} from "../_support/tcp_util.ts";

const MiB = 1 << 20;
/** Each forced outage: the black-hole of both hops. */
const OUTAGE_MS = 4000;
/** After an outage: at most one backoff step (1 s) plus handshake and registration. */
const RECOVERY_MS = 2000;
/** Gap between the numbered UDP datagrams (100/s). */
const UDP_INTERVAL_MS = 10;
/** Largest growth per minute tolerated, by figure. */
export const SLOPE_LIMITS = { rss: 4 * MiB, heap: 2 * MiB, fds: 1, lagMs: 5 } as const;

/** Parses `--minutes N` (default 10). */
function minutesArg(args: string[]): number {
  const i = args.findIndex((a) => a === "--minutes" || a.startsWith("--minutes="));
  if (i === -1) return 10;
  const value = Number(args[i].includes("=") ? args[i].split("=")[1] : args[i + 1]);
  if (!(value > 0)) {
    throw new RangeError(`Cannot soak as '--minutes' must be positive: current value is ${value}`);
  }
  return value;
}

async function main(): Promise<number> {
  const minutes = minutesArg(Deno.args);
  const tunnel = await startFaultTunnel({
    agentHop: {},
    connectorHop: {},
    relay: { idle_timeout_ms: 3000 },
    dialer: { idle_timeout_ms: 3000, reconnect: { base_ms: 200, max_ms: 1000 } },
  });
  const procs = [tunnel.relay, tunnel.connector, tunnel.agent];
  const start = performance.now();
  const end = start + minutes * 60_000;
  const elapsedMin = () => (performance.now() - start) / 60_000;
  let running = true;
  const udp = numberedStream(tunnel.udpPort, UDP_INTERVAL_MS);
  let tcpOk = 0;
  let tcpFailed = 0;
  let reconnects = 0;

  const tcpLoop = (async () => {
    let seed = 100;
    while (running) {
      seed++;
      try {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: tunnel.tcpPort });
        try {
          const answer = await withTimeout(
            (async () => {
              for (const chunk of patternChunks(MiB, seed)) await writeAll(conn, chunk);
              await conn.closeWrite();
              return new TextDecoder().decode(await readAll(conn, 20_000));
            })(),
            20_000,
            "tcp upload",
          );
          if (answer === `${MiB} ${patternSha256(MiB, seed)}\n`) tcpOk++;
          else tcpFailed++;
        } finally {
          conn.close();
        }
      } catch {
        tcpFailed++; // an upload cut by a planned reconnect
      }
      await new Promise((r) => setTimeout(r, 5000));
    }
  })();

  const reconnectLoop = (async () => {
    while (running) {
      await new Promise((r) => setTimeout(r, 45_000));
      if (!running) break;
      tunnel.agentProxy!.blackhole(OUTAGE_MS);
      tunnel.connectorProxy!.blackhole(OUTAGE_MS);
      reconnects++;
    }
  })();

  const samples: { minute: number; figures: ProcessSample[] }[] = [];
  const mb = (b: number) => (b / MiB).toFixed(1);
  console.log(`soak: ${minutes} min; columns per component: RSS MiB / heap MiB / fds / lag ms`);
  let nextRow = 0;
  while (performance.now() < end) {
    const figures = await Promise.all(procs.map((p) => sampleProcess(p)));
    const minute = elapsedMin();
    samples.push({ minute, figures });
    if (minute >= nextRow) {
      nextRow = Math.floor(minute) + 1;
      console.log(
        `  ${minute.toFixed(1).padStart(5)} min  ` +
          procs.map((p, i) => {
            const f = figures[i];
            return `${p.name} ${mb(f.rss)}/${mb(f.heap)}/${f.fds}/${f.lagMs.toFixed(1)}`;
          }).join("  ") +
          `  udp ${udp.received} echoed, tcp ${tcpOk} ok ${tcpFailed} cut, ${reconnects} reconnects`,
      );
    }
    await new Promise((r) => setTimeout(r, Math.min(15_000, Math.max(0, end - performance.now()))));
  }
  running = false;
  const final = await Promise.all(procs.map((p) => sampleProcess(p)));
  samples.push({ minute: elapsedMin(), figures: final });
  const report = await udp.stop(500);
  await Promise.all([tcpLoop, reconnectLoop.catch(() => {})]);
  await tunnel.stop();

  const fitted = samples.filter((s) => minutes < 3 || s.minute >= 1);
  let failed = false;
  console.log(
    `soak result: udp ${report.received}/${report.sent} echoed, tcp ${tcpOk} verified uploads ` +
      `(${tcpFailed} cut by reconnects), ${reconnects} forced reconnects; slopes per minute ` +
      `over ${fitted.length} samples after warm-up:`,
  );
  procs.forEach((p, i) => {
    const xs = fitted.map((s) => s.minute);
    const slope = (key: keyof ProcessSample) =>
      linearSlope(xs, fitted.map((s) => s.figures[i][key]));
    const slopes = {
      rss: slope("rss"),
      heap: slope("heap"),
      fds: slope("fds"),
      lagMs: slope("lagMs"),
    };
    const over = (Object.keys(slopes) as (keyof typeof slopes)[]).filter((k) =>
      slopes[k] > SLOPE_LIMITS[k]
    );
    if (over.length > 0) failed = true;
    console.log(
      `  ${p.name}: RSS ${mb(slopes.rss)} MiB/min (limit ${mb(SLOPE_LIMITS.rss)}), heap ${
        mb(slopes.heap)
      } MiB/min (limit ${mb(SLOPE_LIMITS.heap)}), fds ${
        slopes.fds.toFixed(2)
      }/min (limit ${SLOPE_LIMITS.fds}), ` +
        `lag ${slopes.lagMs.toFixed(2)} ms/min (limit ${SLOPE_LIMITS.lagMs})${
          over.length > 0 ? `  OVER: ${over.join(", ")}` : ""
        }`,
    );
  });
  // Datagrams sent into a forced outage are lost by design; beyond those, at most 1%.
  const outageLoss = reconnects * (OUTAGE_MS + RECOVERY_MS) / UDP_INTERVAL_MS;
  const lost = report.sent - report.received;
  if (lost > outageLoss + report.sent * 0.01) {
    console.log(
      `soak FAILED: ${lost} of ${report.sent} UDP datagrams lost, more than the ${outageLoss} ` +
        `the forced outages account for plus 1%`,
    );
    failed = true;
  }
  if (tcpOk === 0) failed = true;
  console.log(failed ? "soak FAILED" : "soak passed");
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
