/**
 * The network-namespace half of `connector_bind_test.ts`, run inside the connector's
 * namespace: `deno run -A test/e2e/connector_bind_scenario.ts <backend ns> <attacker ns>`.
 * Starts the echo backend in its namespace and a trio here, then lets the attacker send a
 * datagram from the backend's exact `ip:port` to this host's other address. Prints one JSON
 * line (`bind`, `reason`, `leaked`, `noPortsDelta`); exits non-zero on a failed check.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PROJECT_ROOT } from "../../tools/permissions.ts";
import { readLines } from "../../tools/text_lines.ts";
import { metric, scrape, udpClient } from "../_support/harness.ts";
import { startTrio } from "../_support/trio.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** UDP `NoPorts` of this namespace: datagrams that arrived for a port nobody bound. */
function udpNoPorts(): number {
  const lines = Deno.readTextFileSync("/proc/net/snmp").split("\n").filter((l) =>
    l.startsWith("Udp:")
  );
  const names = lines[0].split(/\s+/);
  return Number(lines[1].split(/\s+/)[names.indexOf("NoPorts")]);
}

/** Runs `code` (a module body) with Deno in namespace `ns`; resolves with its stdout. */
async function inNamespace(ns: string, code: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("ip", {
    args: ["netns", "exec", ns, Deno.execPath(), "eval", code, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`in ${ns}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

if (import.meta.main) {
  const [backendNs, attackerNs] = Deno.args;
  const echo = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      backendNs,
      Deno.execPath(),
      "run",
      "--no-prompt",
      `--config=${join(PROJECT_ROOT, "deno.json")}`,
      "--allow-net=10.31.1.2,10.31.1.1",
      join(PROJECT_ROOT, "tools", "echo_service.ts"),
      "10.31.1.2:0",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = readLines(echo.stdout);
  let trio: Awaited<ReturnType<typeof startTrio>> | undefined;
  const client = udpClient();
  try {
    const ready = JSON.parse((await lines.next()).value as string);
    const backendPort = Number(String(ready.udp).split(":").pop());
    trio = await startTrio({
      backends: { echo: `udp://10.31.1.2:${backendPort}` },
      forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
      connector: { log_level: "debug" },
    });
    const agentPort = Number(trio.listen[0].split(":").pop());
    await client.send(enc.encode("hello"), agentPort);
    const echoed = await client.receive(5000);
    const connector = trio.connector;
    assert.ok(echoed, `no echo: ${JSON.stringify(connector.logs.slice(-5))} ${connector.stderr}`);
    assert.equal(dec.decode(echoed), "hello");
    const chosen = await trio.connector.waitForLog((l) => l.msg === "backend bind address");
    const opened = await trio.connector.waitForLog((l) => l.msg === "flow opened");
    const flowPort = Number(String(opened.backend_socket).split(":").pop());
    assert.equal(opened.backend_socket, `10.31.1.1:${flowPort}`);

    // The attacker owns 10.31.1.2 on its own link and sends from the backend's ip:port to
    // this host's address on that link: exactly what a 0.0.0.0 socket would accept.
    const before = udpNoPorts();
    await inNamespace(
      attackerNs,
      `import dgram from "node:dgram";
       const [port, to] = Deno.args.map(Number);
       const s = dgram.createSocket("udp4");
       s.bind(port, "10.31.1.2", () => s.send("spoofed", to, "10.31.2.1", () => s.close()));`,
      String(backendPort),
      String(flowPort),
    );
    const leaked = await client.receive(1000);
    const noPortsDelta = udpNoPorts() - before;
    const samples = await scrape(String(trio.connector.ready.metrics));
    assert.equal(metric(samples, 'ztna_connector_datagrams_total{direction="from_backend"}'), 1);
    console.log(JSON.stringify({
      bind: chosen.bind,
      reason: chosen.reason,
      leaked: leaked === null ? 0 : 1,
      noPortsDelta,
    }));
  } finally {
    client.close();
    await trio?.stop();
    echo.kill("SIGTERM");
    await echo.status;
  }
}
