import assert from "node:assert/strict";
import {
  type ComponentProcess,
  createPki,
  metric,
  scrape,
  startEchoService,
} from "../_support/harness.ts";
import { waitFor } from "../_support/wait.ts";
import { seededRandom } from "../_support/impair_proxy.ts";
import {
  numberedStream,
  probe,
  startAgent,
  startConnector,
  startRelay,
  untilEcho,
} from "../_support/ops_util.ts";
import { freePort } from "../_support/ports.ts";

const CHAOS_MS = 20_000;
const ACTION_EVERY_MS = 2500;
const IDLE_TIMEOUT_MS = 3000;

Deno.test("fault: chaos on one of two relays and one of two connectors while traffic runs", async () => {
  const pki = await createPki(["connector-1", "connector-2", "agent-1"]);
  const echo = await startEchoService();
  const ports = [freePort("udp"), freePort("udp")];
  const addresses = ports.map((p) => `127.0.0.1:${p}`);
  const dialer = {
    idle_timeout_ms: IDLE_TIMEOUT_MS,
    reconnect: { base_ms: 200, max_ms: 1000 },
    drain_ms: 300,
  };
  const relayAt = (i: number) =>
    startRelay(pki, {
      port: ports[i],
      connectors: ["connector-1", "connector-2"],
      agents: ["agent-1"],
      drainMs: 300,
    });
  const connectorNamed = (name: string) => startConnector(pki, name, addresses, echo.port, dialer);
  const relays: ComponentProcess[] = [await relayAt(0), await relayAt(1)];
  const connectors: ComponentProcess[] = [
    await connectorNamed("connector-1"),
    await connectorNamed("connector-2"),
  ];
  const agent = await startAgent(pki, "agent-1", addresses, dialer);
  const retired: ComponentProcess[] = [];
  const random = seededRandom(8);
  try {
    await Promise.all(connectors.map((c) => c.waitForLog((l) => l.msg === "registered", 15_000)));
    assert.ok(await untilEcho(agent.port, 10_000) !== null, "echo before the chaos");

    const stream = numberedStream(agent.port, 20);
    const actions: string[] = [];
    const chaosEnd = performance.now() + CHAOS_MS;
    while (performance.now() < chaosEnd) {
      const onRelay = random() < 0.5;
      const kind = (["SIGKILL", "SIGTERM", "restart"] as const)[Math.floor(random() * 3)];
      const list = onRelay ? relays : connectors;
      const victim = list[0];
      const started = performance.now();
      await victim.stop(kind === "SIGKILL" ? "SIGKILL" : "SIGTERM", 10_000).catch(() =>
        victim.stop("SIGKILL")
      );
      retired.push(victim);
      // A kill or stop leaves the component down for a moment; a restart brings it back at once.
      if (kind !== "restart") await new Promise((r) => setTimeout(r, 300 + random() * 700));
      list[0] = onRelay ? await relayAt(0) : await connectorNamed("connector-1");
      actions.push(
        `${kind} ${onRelay ? "relay-1" : "connector-1"} (back in ${
          (performance.now() - started).toFixed(0)
        } ms)`,
      );
      const wait = ACTION_EVERY_MS * (0.5 + random());
      await new Promise((r) =>
        setTimeout(r, Math.max(0, Math.min(wait, chaosEnd - performance.now())))
      );
    }
    const report = await stream.stop(1000);
    const availability = report.received / report.sent;

    // Everything ready again, then one final end-to-end check.
    const everyone = [...relays, ...connectors, agent.proc];
    await waitFor("every component ready", async () => {
      const statuses = await Promise.all(
        everyone.map((p) => probe(String(p.ready.metrics), "/readyz")),
      );
      return statuses.every((s) => s === 200);
    }, 20_000);
    await waitFor("connectors registered with both relays", async () => {
      const counts = await Promise.all(
        connectors.map(async (c) =>
          metric(await scrape(String(c.ready.metrics)), "ztna_connector_relay_connections_active")
        ),
      );
      return counts.every((n) => n === 2);
    }, 20_000);
    assert.ok(await untilEcho(agent.port, 10_000) !== null, "final end-to-end echo");
    const final = numberedStream(agent.port, 10);
    await new Promise((r) => setTimeout(r, 1000));
    const finalReport = await final.stop(300);
    const agentMetrics = await scrape(String(agent.proc.ready.metrics));
    console.log(
      `chaos ${CHAOS_MS / 1000} s: ${actions.length} actions: ${actions.join("; ")}\n` +
        `  availability ${
          (100 * availability).toFixed(1)
        }% (${report.received}/${report.sent} probe datagrams ` +
        `answered), longest gap ${report.maxGapMs.toFixed(0)} ms, agent reconnects ${
          metric(agentMetrics, "ztna_agent_reconnects_total")
        }; final check ${finalReport.received}/${finalReport.sent} echoed, all ${everyone.length} components ready`,
    );
    assert.ok(actions.length >= 5, "the chaos did act");
    assert.ok(availability > 0.5, `availability ${(100 * availability).toFixed(1)}%`);
    assert.ok(finalReport.received >= finalReport.sent * 0.95, "the final check passes");
  } finally {
    const all = [agent.proc, ...connectors, ...relays, echo.proc];
    await Promise.allSettled(
      all.map((p) => p.stop("SIGTERM", 8000).catch(() => p.stop("SIGKILL"))),
    );
    await Promise.allSettled(retired.map((p) => p.stop("SIGKILL")));
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
