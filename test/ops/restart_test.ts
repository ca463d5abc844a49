import assert from "node:assert/strict";
import { createPki, startEchoService } from "../_support/harness.ts";
import { waitFor } from "../_support/wait.ts";
import { startAgent, startConnector, startRelay, untilEcho } from "../_support/ops_util.ts";
import { freePort } from "../_support/ports.ts";

Deno.test("reconnection: restart of the only relay; connector re-registers, agent flow works again", async () => {
  const pki = await createPki(["connector-1", "agent-1"]);
  const echo = await startEchoService();
  const port = freePort("udp");
  const policy = { port, connectors: ["connector-1"], agents: ["agent-1"], drainMs: 500 };
  let relay = await startRelay(pki, policy);
  const address = String(relay.ready.quic);
  const connector = await startConnector(pki, "connector-1", [address], echo.port);
  const agent = await startAgent(pki, "agent-1", [address]);
  const procs = [agent.proc, connector, echo.proc];
  try {
    await connector.waitForLog((l) => l.msg === "registered");
    assert.ok(await untilEcho(agent.port, 5000) !== null, "echo before the restart");

    assert.equal(await relay.stop("SIGTERM"), 0);
    await waitFor(
      "connector and agent noticing",
      () =>
        connector.logs.some((l) => l.msg === "relay session lost") &&
        agent.proc.logs.some((l) => l.msg === "relay session lost"),
    );
    // Down for a moment, as in a real restart; then back on the same address.
    await new Promise((r) => setTimeout(r, 500));
    relay = await startRelay(pki, policy);
    const back = performance.now();
    // 15 s is a hang guard; how fast the same processes recover is bench:recovery's figure.
    const echoedAt = await untilEcho(agent.port, 15_000);
    assert.ok(echoedAt !== null, "the agent flow never worked again");
    const registrations = connector.logs.filter((l) => l.msg === "registered").length;
    assert.equal(registrations, 2, "the connector registered again");
    const agentLinks = agent.proc.logs.filter((l) => l.msg === "relay link up").length;
    assert.equal(agentLinks, 2, "the same agent process dialed the restarted relay");
    console.log(
      `relay restart: agent flow works again ${(echoedAt - back).toFixed(0)} ms after the ` +
        `relay is back`,
    );
  } finally {
    procs.push(relay);
    await Promise.allSettled(procs.map((p) => p.stop("SIGTERM").catch(() => p.stop("SIGKILL"))));
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
