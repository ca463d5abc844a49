import assert from "node:assert/strict";
import { metric, scrape } from "../_support/harness.ts";
import { waitFor } from "../_support/wait.ts";
import { startFaultTunnel } from "../_support/fault_util.ts";
import { numberedStream } from "../_support/ops_util.ts";

const BLACKHOLE_MS = 10_000;
const IDLE_TIMEOUT_MS = 3000;

Deno.test("fault: 10 s black-hole of the relay path; silence detects it, links and flows come back", async () => {
  await using tunnel = await startFaultTunnel({
    agentHop: {},
    connectorHop: {},
    tcp: false,
    relay: { idle_timeout_ms: IDLE_TIMEOUT_MS },
    dialer: { idle_timeout_ms: IDLE_TIMEOUT_MS, reconnect: { base_ms: 200, max_ms: 1000 } },
  });
  const stream = numberedStream(tunnel.udpPort, 10);
  try {
    await waitFor("echoes before the black-hole", () => stream.received > 50, 15_000);
    const before = {
      agent: await scrape(String(tunnel.agent.ready.metrics)),
      connector: await scrape(String(tunnel.connector.ready.metrics)),
      relay: await scrape(String(tunnel.relay.ready.metrics)),
    };
    const lastBefore = stream.lastEchoed;

    tunnel.agentProxy!.blackhole(BLACKHOLE_MS);
    tunnel.connectorProxy!.blackhole(BLACKHOLE_MS);
    // Detection comes from silence, not a signal: each side logs the loss while the path is
    // still cut, by the idle timeout, or at the agent by the end-to-end session's path
    // keepalives (whichever fires first). The wait is a hang guard as long as the black-hole.
    const lost = async (proc: typeof tunnel.agent) => {
      const line = await proc.waitForLog((l) => l.msg === "relay session lost", BLACKHOLE_MS);
      return { reason: line.reason, duringBlackhole: tunnel.agentProxy!.blackholed };
    };
    const [agentLost, connectorLost] = await Promise.all([
      lost(tunnel.agent),
      lost(tunnel.connector),
    ]);
    const agentReady = await fetch(`http://${tunnel.agent.ready.metrics}/readyz`);
    await agentReady.body?.cancel();
    assert.equal(agentReady.status, 503, "the agent reports not ready while cut off");

    await waitFor("the path to return", () => !tunnel.agentProxy!.blackholed, BLACKHOLE_MS + 5000);
    const resumed = await waitFor(
      "echoes after the path returns",
      () => stream.lastEchoed > lastBefore + 10 && performance.now(),
      20_000,
    );
    // The resumed flow keeps running: 50 more echoes come back.
    const echoedAtResume = stream.lastEchoed;
    await waitFor("the resumed flow to run on", () => stream.lastEchoed >= echoedAtResume + 50);
    const report = await stream.stop(300);
    const sentAfter = report.sentAt.filter((t) => t > resumed).length;
    const echoedAfter = [...report.echoedAt.keys()].filter((seq) => report.sentAt[seq] > resumed)
      .length;
    const after = {
      agent: await scrape(String(tunnel.agent.ready.metrics)),
      connector: await scrape(String(tunnel.connector.ready.metrics)),
      relay: await scrape(String(tunnel.relay.ready.metrics)),
    };
    const delta = (which: keyof typeof after, key: string) =>
      metric(after[which], key) - metric(before[which], key);
    const agentReconnects = delta("agent", "ztna_agent_reconnects_total");
    const connectorReconnects = delta("connector", "ztna_connector_reconnects_total");
    const accepted = delta("relay", 'ztna_relay_connections_accepted_total{role="agent"}') +
      delta("relay", 'ztna_relay_connections_accepted_total{role="connector"}');
    console.log(
      `black-hole ${BLACKHOLE_MS / 1000} s (idle timeout ${IDLE_TIMEOUT_MS} ms): agent lost ` +
        `(${agentLost.reason}), connector lost (${connectorLost.reason}); reconnects agent ` +
        `+${agentReconnects}, connector +${connectorReconnects}, relay accepted +${accepted}; ` +
        `stream sent ${report.sent}, echoed ${report.received}; after resuming ` +
        `${echoedAfter}/${sentAfter} echoed`,
    );
    assert.match(String(agentLost.reason), /^idle timeout$|\(path keepalives unanswered\)\)$/);
    assert.equal(connectorLost.reason, "idle timeout", "the connector noticed by the idle timeout");
    for (const [who, lostAt] of [["agent", agentLost], ["connector", connectorLost]] as const) {
      assert.ok(lostAt.duringBlackhole, `${who} noticed while the path was still cut`);
    }
    assert.ok(agentReconnects >= 1, "the agent's reconnect metric moved");
    assert.ok(connectorReconnects >= 1, "the connector's reconnect metric moved");
    assert.ok(accepted >= 2, "the relay accepted both again");
    assert.ok(echoedAfter >= sentAfter * 0.9, `after resuming ${echoedAfter}/${sentAfter} echoed`);
    assert.equal(metric(after.agent, "ztna_agent_relay_connected"), 1);
    assert.equal(metric(after.connector, "ztna_connector_relay_connections_active"), 1);
  } finally {
    await stream.stop(0).catch(() => {});
  }
});
