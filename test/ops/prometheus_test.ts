import assert from "node:assert/strict";
import { udpClient } from "../_support/harness.ts";
import { startTunnel } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";
import { startPrometheus } from "../_support/ops_util.ts";

/** Runs `promtool check metrics` on `body`; resolves with its exit code and output. */
async function promtoolCheck(body: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(body));
  await writer.close();
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, output: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

Deno.test("metrics: a real Prometheus scrapes relay, connector and agent; promtool accepts them", async () => {
  const tunnel = await startTunnel();
  const targets = {
    relay: String(tunnel.relay.ready.metrics),
    connector: String(tunnel.connector.ready.metrics),
    agent: String(tunnel.agent.ready.metrics),
  };
  const prometheus = await startPrometheus(targets);
  const client = udpClient();
  try {
    const up = await waitFor("all three targets up", async () => {
      const body = await prometheus.api("/api/v1/targets");
      const active = (body.data as { activeTargets: { labels: { job: string }; health: string }[] })
        .activeTargets;
      const healthy = active.filter((t) => t.health === "up").map((t) => t.labels.job).sort();
      return healthy.length === 3 && healthy;
    }, 15_000);
    assert.deepEqual(up, ["agent", "connector", "relay"]);

    // Traffic after the first scrapes, so the relay counter visibly moves in Prometheus.
    for (let i = 0; i < 20; i++) {
      await client.send(new TextEncoder().encode(`datagram ${i}`), tunnel.agentPort);
      assert.ok(await client.receive(2000), `echo ${i}`);
    }
    const query = encodeURIComponent(
      'ztna_relay_datagrams_relayed_total{direction="to_connector"}',
    );
    const value = await waitFor("the relay counter in Prometheus", async () => {
      const body = await prometheus.api(`/api/v1/query?query=${query}`);
      const result = (body.data as { result: { value: [number, string] }[] }).result;
      const n = result.length > 0 ? Number(result[0].value[1]) : 0;
      return n >= 20 && n;
    }, 15_000);
    console.log(`prometheus: targets up ${up.join(", ")}; relay datagrams to_connector = ${value}`);

    for (const [name, address] of Object.entries(targets)) {
      const body = await (await fetch(`http://${address}/metrics`)).text();
      const { code, output } = await promtoolCheck(body);
      assert.equal(code, 0, `promtool check metrics on the ${name}: ${output}`);
    }
  } finally {
    client.close();
    await prometheus.stop();
    await tunnel.stop();
  }
});
