import assert from "node:assert/strict";
import { metric, scrape, udpClient } from "../_support/harness.ts";
import { startTunnel } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";

const enc = new TextEncoder();

Deno.test("authorization: refused agents and foreign certificates do not affect other flows", async (t) => {
  await using tunnel = await startTunnel({ extraClients: ["agent-2"] });
  const good = udpClient();
  try {
    // A flow of the allowed agent that must keep working throughout.
    const ping = async (label: string) => {
      await good.send(enc.encode(label), tunnel.agentPort);
      const reply = await good.receive(2000);
      assert.equal(reply && new TextDecoder().decode(reply), label);
    };
    await ping("before");

    await t.step(
      "an agent whose identity the policy does not list is refused clearly",
      async () => {
        const agent2 = await tunnel.startAgent("agent-2");
        await agent2.waitForLog((l) => l.msg === "relay link up");
        const port = Number(String((agent2.ready.listen as string[])[0]).split(":").pop());
        const client = udpClient();
        try {
          await client.send(enc.encode("let me in"), port);
          const refusal = await agent2.waitForLog((l) => l.msg === "relay refused flow");
          assert.equal(refusal.reason, "forbidden");
          assert.match(String(refusal.detail), /identity "agent-2" may not use service "echo"/);
          assert.equal(await client.receive(500), null, "nothing comes back");
        } finally {
          client.close();
        }
        const samples = await scrape(String(tunnel.relay.ready.metrics));
        assert.ok(metric(samples, 'ztna_relay_auth_failures_total{reason="open_forbidden"}') >= 1);
        assert.ok(metric(samples, 'ztna_relay_flow_refusals_total{reason="forbidden"}') >= 1);
        await ping("during refusal");
      },
    );

    await t.step("a client certificate from another CA fails the handshake", async () => {
      const stranger = await tunnel.startAgent("mallory", await tunnel.pki.strangerTls("mallory"));
      const failure = await stranger.waitForLog((l) => l.msg === "relay connection failed");
      assert.match(String(failure.reason), /TLS alert unknown_ca/);
      await waitFor("handshake failure counted", async () => {
        const samples = await scrape(String(tunnel.relay.ready.metrics));
        return metric(samples, 'ztna_relay_handshake_failures_total{reason="unknown_ca"}') >= 1;
      });
      await ping("after stranger");
    });
  } finally {
    good.close();
  }
});

Deno.test("source validation: datagrams from another host never enter the tunnel", async () => {
  await using tunnel = await startTunnel({ connectorLogLevel: "debug" });
  const client = udpClient();
  const intruder = udpClient("127.0.0.2");
  try {
    await client.send(enc.encode("hello"), tunnel.agentPort);
    assert.equal(new TextDecoder().decode((await client.receive(2000))!), "hello");
    const opened = await tunnel.connector.waitForLog((l) => l.msg === "flow opened");
    const backendSocketPort = Number(String(opened.backend_socket).split(":").pop());
    for (let i = 0; i < 20; i++) {
      await intruder.send(enc.encode(`injected ${i}`), backendSocketPort, "127.0.0.1");
    }
    await waitFor("rejects counted", async () => {
      const samples = await scrape(String(tunnel.connector.ready.metrics));
      return metric(samples, 'ztna_connector_source_validation_rejects_total{service="echo"}') ===
        20;
    });
    const leaked = await client.receive(500);
    assert.equal(leaked, null, "no injected payload reached the agent's client");
    const warning = await tunnel.connector.waitForLog((l) =>
      l.msg === "dropped datagram from unexpected source"
    );
    assert.equal(warning.source, "127.0.0.2");
    const warnings = tunnel.connector.logs.filter((l) =>
      l.msg === "dropped datagram from unexpected source"
    );
    assert.equal(warnings.length, 1, "the warning is rate limited");
    await client.send(enc.encode("still fine"), tunnel.agentPort);
    assert.equal(new TextDecoder().decode((await client.receive(2000))!), "still fine");
  } finally {
    client.close();
    intruder.close();
  }
});
