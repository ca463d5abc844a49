/**
 * `deno task bench:wake`: what waiting for readiness costs an idle socket. A pinger sends one
 * 100 B datagram, waits for its echo, idles 1 ms and repeats; the echo process waits in one of
 * three ways (see `wake_echo.ts`): the batched socket (Deno's reactor, then `recvmmsg`), the
 * portable socket, and a blocking `poll` on Deno's thread pool. The round trip's p50 and p99
 * include one wake-up of the echo process; the pinger is the same for all three.
 *
 * Flags: `--count=N` round trips per mode (default 2000).
 *
 * @module
 */
import { join } from "node:path";
import { spawnLogged } from "../test/_support/harness.ts";
import { PROJECT_ROOT } from "../tools/permissions.ts";
import { openUdpSocket, udpTarget } from "../shared/quic/udp_socket.ts";
import { freePort, progress, writeResult } from "./bench_util.ts";

const count = Number(Deno.args.find((a) => a.startsWith("--count="))?.slice(8) ?? 2000);
const rows: Record<string, unknown>[] = [];
for (const mode of ["batched", "portable", "poll"]) {
  const port = freePort("udp");
  const echo = await spawnLogged("echo", [
    "run",
    "--no-prompt",
    `--config=${join(PROJECT_ROOT, "deno.json")}`,
    "--allow-net=127.0.0.1",
    "--allow-ffi",
    join(PROJECT_ROOT, "bench", "wake_echo.ts"),
    mode,
    String(port),
  ]);
  let answered: (() => void) | null = null;
  const pinger = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    kind: "portable",
    onPacket: () => answered?.(),
  });
  const to = udpTarget("127.0.0.1", port);
  const payload = new Uint8Array(100);
  const rtts: number[] = [];
  try {
    for (let i = 0; i < count + 100; i++) {
      await new Promise((r) => setTimeout(r, 1));
      const started = performance.now();
      const reply = new Promise<boolean>((resolve) => {
        answered = () => resolve(true);
        setTimeout(() => resolve(false), 1000);
      });
      pinger.send(payload, to);
      const ok = await reply;
      // The first 100 warm the JIT of both ends.
      if (ok && i >= 100) rtts.push((performance.now() - started) * 1000);
    }
  } finally {
    pinger.close();
    await echo.stop("SIGKILL");
  }
  rtts.sort((a, b) => a - b);
  const at = (p: number) =>
    Math.round(rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))]);
  const row = { mode, answered: rtts.length, rtt_us: { p50: at(0.5), p99: at(0.99) } };
  progress(row);
  rows.push(row);
}
await writeResult("wake", { count, rows });
