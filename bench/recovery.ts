/**
 * `deno task bench:recovery`: ten relay restarts (SIGTERM, wait for exit, start a new relay
 * on the same port) and the time until a datagram through the agent is echoed again, with
 * the connector and agent on their default reconnect backoff; SIGTERM → exit time of each
 * component (relay with a live flow and `drain_ms` 500); process start → ready line of each.
 *
 * Flags: `--restarts=N` (default 10).
 *
 * @module
 */
import { type ComponentProcess, udpClient } from "../test/_support/harness.ts";
import {
  freePort,
  listenPort,
  median,
  progress,
  round,
  startBenchTunnel,
  startComponentWith,
  writeResult,
} from "./bench_util.ts";
import { startUdpSink } from "./udp_sink.ts";

const restarts = Number(Deno.args.find((a) => a.startsWith("--restarts="))?.slice(11) ?? 10);
const echo = startUdpSink(true);
const relayPort = freePort("udp");
const tunnel = await startBenchTunnel({
  services: { echo: [`udp://127.0.0.1:${echo.port}`] },
  forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
  relayListen: `127.0.0.1:${relayPort}`,
});
const client = udpClient();
const extra: ComponentProcess[] = [];
const recovery: { from_signal_ms: number; from_relay_ready_ms: number }[] = [];
const exits: Record<string, number[]> = { relay: [], connector: [], agent: [] };
const starts: Record<string, number[]> = { relay: [], connector: [], agent: [] };
const agentPort = listenPort(tunnel.listen[0]);

/** Sends every 20 ms until an echo comes back; resolves with the time it did. */
async function echoAgain(deadlineMs = 30_000): Promise<number> {
  const deadline = performance.now() + deadlineMs;
  const probe = new Uint8Array(32);
  while (performance.now() < deadline) {
    await client.send(probe, agentPort);
    if (await client.receive(20) !== null) return performance.now();
  }
  throw new Error("flow did not come back");
}

/** SIGTERM → exit in ms. */
async function timedStop(proc: ComponentProcess): Promise<number> {
  const started = performance.now();
  await proc.stop("SIGTERM", 15_000);
  return performance.now() - started;
}

/** spawn → ready line in ms. */
async function timedStart(
  component: "relay" | "connector" | "agent",
  config: Record<string, unknown>,
): Promise<ComponentProcess> {
  const started = performance.now();
  const proc = await startComponentWith(component, config);
  extra.push(proc);
  starts[component].push(performance.now() - started);
  return proc;
}

try {
  await echoAgain();
  let relay = tunnel.relay;
  for (let i = 0; i < restarts; i++) {
    await echoAgain();
    const signalled = performance.now();
    exits.relay.push(await timedStop(relay));
    relay = await timedStart("relay", tunnel.configs.relay);
    const ready = performance.now();
    const back = await echoAgain();
    const row = { from_signal_ms: back - signalled, from_relay_ready_ms: back - ready };
    progress(`restart ${i + 1}`, row);
    recovery.push(row);
  }
  exits.agent.push(await timedStop(tunnel.agent));
  exits.connector.push(await timedStop(tunnel.connector));
  for (let i = 0; i < 3; i++) {
    const connector = await timedStart("connector", tunnel.configs.connector);
    const agent = await timedStart("agent", tunnel.configs.agent);
    exits.agent.push(await timedStop(agent));
    exits.connector.push(await timedStop(connector));
  }
} finally {
  client.close();
  await Promise.allSettled(
    extra.map((p) => p.stop("SIGTERM", 8000).catch(() => p.stop("SIGKILL"))),
  );
  await tunnel.stop();
  await echo.close();
}

const summary = (values: number[]) => ({
  median_ms: round(median([...values])),
  max_ms: round(Math.max(...values)),
  n: values.length,
});
await writeResult("recovery", {
  restarts: recovery.length,
  recovery_from_relay_ready: summary(recovery.map((r) => r.from_relay_ready_ms)),
  recovery_from_sigterm: summary(recovery.map((r) => r.from_signal_ms)),
  sigterm_to_exit: Object.fromEntries(Object.entries(exits).map(([k, v]) => [k, summary(v)])),
  start_to_ready: Object.fromEntries(Object.entries(starts).map(([k, v]) => [k, summary(v)])),
});
