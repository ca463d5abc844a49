import assert from "node:assert/strict";
import { metric, portOf, scrape, startEchoService } from "../_support/harness.ts";
import { startTrio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";
import { numberedStream, probe } from "../_support/ops_util.ts";

const DRAIN_MS = 2000;

Deno.test("HA: SIGTERM to one of two relays under a UDP stream; traffic moves to the other", async () => {
  const echo = await startEchoService();
  await using trio = await startTrio({
    relays: 2,
    backends: { echo: `udp://127.0.0.1:${echo.port}` },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    relay: { drain_ms: DRAIN_MS },
    processes: [echo.proc],
  });
  const [relayA, relayB] = trio.relays;
  const [a, b] = trio.relayAddresses;
  const { connector } = trio;
  const agent = { proc: trio.agent, port: portOf(trio.listen[0]) };
  // startTrio waited for both registrations and the agent's link; the agent took relay A.
  assert.equal(connector.logs.filter((l) => l.msg === "registered").length, 2);
  await agent.proc.waitForLog((l) => l.msg === "relay link up" && l.relay === a);

  const stream = numberedStream(agent.port, 5);
  await waitFor("the stream flowing through relay A", () => stream.received >= 100);

  let relayAExited = false;
  const exited = relayA.stop("SIGTERM", DRAIN_MS + 5000).then((code) => {
    relayAExited = true;
    return code;
  });
  // Readiness flips while relay A still drains: the listener answers 503 (not a refused
  // connection) before the process is gone. Order, not speed, is asserted.
  const notReady = await waitFor("relay A's /readyz to stop answering 200", async () => {
    const status = await probe(String(relayA.ready.metrics), "/readyz", 500);
    return status !== 200 && { status, whileRunning: !relayAExited };
  }, DRAIN_MS + 5000);
  assert.equal(notReady.status, 503, "readiness turned 503 during the drain");
  assert.ok(notReady.whileRunning, "readiness flipped before relay A exited");

  await agent.proc.waitForLog((l) => l.msg === "relay link up" && l.relay === b, 5000);
  assert.equal(await exited, 0, "relay A exit code");

  // The stream must be flowing again through relay B.
  const resumeFrom = stream.lastEchoed;
  await waitFor(
    "the stream resuming through relay B",
    () => stream.lastEchoed >= resumeFrom + 100,
  );
  const report = await stream.stop();
  const samples = await scrape(String(connector.ready.metrics));
  assert.equal(metric(samples, "ztna_connector_relay_connections_active"), 1);
  // The same end-to-end session moved to a channel through relay B: no new session.
  const relayBSamples = await scrape(String(relayB.ready.metrics));
  assert.ok(metric(relayBSamples, 'ztna_relay_channels_opened_total{service="echo"}') >= 1);
  const agentSamples = await scrape(String(agent.proc.ready.metrics));
  assert.equal(metric(agentSamples, "ztna_agent_sessions_opened_total"), 1);
  assert.equal(metric(agentSamples, 'ztna_agent_path_switches_total{cause="draining"}'), 1);
  assert.ok(report.lost < report.sent / 2, `lost ${report.lost} of ${report.sent}`);
  console.log(
    `relay failover: readiness 503 during the drain, exit 0; stream sent ${report.sent}, ` +
      `lost ${report.lost}, longest gap ${report.maxGapMs.toFixed(0)} ms`,
  );
});
