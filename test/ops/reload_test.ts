import assert from "node:assert/strict";
import {
  createPki,
  metric,
  scrape,
  startComponent,
  startEchoService,
} from "../_support/harness.ts";
import { relayConfig, startTunnel } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";
import { numberedStream, startAgent, startConnector } from "../_support/ops_util.ts";
import {
  connectAndPing,
  connectionEnds,
  echoTcp,
  startTcpServer,
  startTcpTunnel,
} from "../_support/tcp_util.ts";

Deno.test("reload: SIGHUP with a policy that removes an agent closes its flows; an invalid file changes nothing", async () => {
  await using tunnel = await startTunnel();
  const { relay, connector, agent } = tunnel;
  const configPath = relay.configPath!;
  const original = await Deno.readTextFile(configPath);
  const relayMetrics = String(relay.ready.metrics);
  const reloadLogs = () => relay.logs.filter((l) => String(l.msg).startsWith("reload")).length;
  const stream = numberedStream(tunnel.agentPort, 10);
  try {
    await waitFor("the stream flowing", () => stream.received >= 20);

    // Invalid files: not JSON, then JSON the schema refuses. Nothing may change.
    for (const bad of ["{ not json", JSON.stringify({ ...JSON.parse(original), listen: 5 })]) {
      await Deno.writeTextFile(configPath, bad);
      const before = reloadLogs();
      relay.signal("SIGHUP");
      await waitFor("the reload being rejected", () => reloadLogs() > before);
      assert.equal(relay.logs.at(-1)?.msg, "reload rejected: keeping the running config");
      const from = stream.lastEchoed;
      await waitFor("the stream still flowing", () => stream.lastEchoed >= from + 20, 3000);
    }
    let samples = await scrape(relayMetrics);
    assert.equal(metric(samples, 'ztna_relay_reloads_total{result="rejected"}'), 2);
    assert.equal(metric(samples, 'ztna_relay_reloads_total{result="applied"}'), 0);
    assert.equal(metric(samples, "ztna_relay_channels_active"), 1);

    // Remove the agent's permission: its session's channel closes, and its flow at both ends.
    const revoked = JSON.parse(original);
    revoked.services.echo.agents = [];
    await Deno.writeTextFile(configPath, JSON.stringify(revoked));
    relay.signal("SIGHUP");
    await relay.waitForLog((l) => l.msg === "policy applied" && l.flows_closed === 1);
    await waitFor("the flow closed everywhere", async () => {
      const r = await scrape(relayMetrics);
      const c = await scrape(String(connector.ready.metrics));
      const a = await scrape(String(agent.ready.metrics));
      return metric(r, "ztna_relay_channels_active") === 0 &&
        metric(c, 'ztna_connector_flows_active{protocol="udp"}') === 0 &&
        metric(a, 'ztna_agent_flows_active{protocol="udp"}') === 0;
    });
    await agent.waitForLog((l) => l.msg === "service down" && l.service === "echo");
    const stalledAt = stream.lastEchoed;
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(stream.lastEchoed <= stalledAt + 1, "the revoked agent still gets echoes");
    samples = await scrape(relayMetrics);
    assert.equal(metric(samples, 'ztna_relay_reloads_total{result="applied"}'), 1);
    assert.equal(metric(samples, "ztna_relay_channels_closed_total"), 1);
    const agentSamples = await scrape(String(agent.ready.metrics));
    const failedFast = metric(agentSamples, 'ztna_agent_drops_total{reason="service_down"}');
    assert.ok(failedFast > 0, "the agent fails new flows fast while the service is down");

    // Granting it again brings the service back for the agent without a restart.
    await Deno.writeTextFile(configPath, original);
    relay.signal("SIGHUP");
    await agent.waitForLog((l) => l.msg === "service up" && l.service === "echo");
    const resumeFrom = stream.lastEchoed;
    await waitFor("the stream resuming", () => stream.lastEchoed >= resumeFrom + 20, 5000);
    const report = await stream.stop();
    console.log(
      `reload: 2 invalid files rejected, revocation closed 1 flow, agent dropped ${failedFast} ` +
        `datagrams fast while revoked; stream sent ${report.sent}, echoed ${report.received}`,
    );
  } finally {
    await stream.stop(0).catch(() => {});
  }
});

Deno.test("reload: SIGHUP on a connector withdraws a removed service and closes its flows", async () => {
  const pki = await createPki(["connector-1", "agent-1"]);
  const echo = await startEchoService();
  const rule = { connectors: ["connector-1"], agents: ["agent-1"] };
  const relay = await startComponent("relay", {
    ...relayConfig(pki, { echo: rule, spare: rule }),
  });
  const backend = `udp://127.0.0.1:${echo.port}`;
  const connector = await startConnector(
    pki,
    "connector-1",
    [String(relay.ready.quic)],
    echo.port,
    {
      services: { echo: backend, spare: backend },
    },
  );
  const agent = await startAgent(pki, "agent-1", [String(relay.ready.quic)]);
  const procs = [agent.proc, connector, relay, echo.proc];
  const stream = numberedStream(agent.port, 10);
  try {
    await waitFor("the stream flowing", () => stream.received >= 20);
    const configPath = connector.configPath!;
    const original = JSON.parse(await Deno.readTextFile(configPath));

    // A backend outside the sandbox the connector was started with: rejected, nothing changes.
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({ ...original, services: { echo: `udp://127.0.0.1:${echo.port + 1}` } }),
    );
    connector.signal("SIGHUP");
    const rejected = await connector.waitForLog((l) => String(l.msg).startsWith("reload rejected"));
    assert.match(JSON.stringify(rejected.error), /outside this connector's network sandbox/);
    const from = stream.lastEchoed;
    await waitFor("the stream still flowing", () => stream.lastEchoed >= from + 20, 3000);

    await Deno.writeTextFile(
      configPath,
      JSON.stringify({ ...original, services: { spare: backend } }),
    );
    connector.signal("SIGHUP");
    await connector.waitForLog((l) => l.msg === "services reloaded");
    await agent.proc.waitForLog((l) => l.msg === "service down" && l.service === "echo");
    await waitFor(
      "the flow closed at the relay",
      async () =>
        metric(
          await scrape(String(relay.ready.metrics)),
          'ztna_relay_flows_active{protocol="udp"}',
        ) ===
          0,
    );
    const samples = await scrape(String(connector.ready.metrics));
    assert.equal(metric(samples, 'ztna_connector_reloads_total{result="rejected"}'), 1);
    assert.equal(metric(samples, 'ztna_connector_reloads_total{result="applied"}'), 1);
    assert.equal(metric(samples, 'ztna_connector_flows_active{protocol="udp"}'), 0);
    const relayHealth = await (await fetch(`http://${relay.ready.metrics}/health`)).json();
    assert.deepEqual(relayHealth.services, ["spare"]);
  } finally {
    await stream.stop(0).catch(() => {});
    await Promise.allSettled(procs.map((p) => p.stop("SIGTERM").catch(() => p.stop("SIGKILL"))));
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("reload: revoking an agent's TCP service resets its open TCP connections at both ends", async () => {
  const backend = startTcpServer(echoTcp);
  const tunnel = await startTcpTunnel({ backends: { echo: backend.port } });
  const { relay, connector } = tunnel;
  const relayMetrics = String(relay.ready.metrics);
  const conn = await connectAndPing(tunnel.ports.echo);
  try {
    await waitFor("the tcp flow counted", async () => {
      const samples = await scrape(String(tunnel.agent.ready.metrics));
      return metric(samples, 'ztna_agent_flows_active{protocol="tcp"}') === 1;
    });

    const configPath = relay.configPath!;
    const revoked = JSON.parse(await Deno.readTextFile(configPath));
    revoked.services.echo.agents = [];
    await Deno.writeTextFile(configPath, JSON.stringify(revoked));
    relay.signal("SIGHUP");
    await relay.waitForLog((l) => l.msg === "policy applied" && l.flows_closed === 1);
    // The agent's client sees its connection end (the agent closes it on the stream reset).
    await connectionEnds(conn);
    await waitFor("the flow closed everywhere", async () => {
      const r = await scrape(relayMetrics);
      const c = await scrape(String(connector.ready.metrics));
      const a = await scrape(String(tunnel.agent.ready.metrics));
      return metric(r, "ztna_relay_channels_active") === 0 &&
        metric(c, 'ztna_connector_flows_active{protocol="tcp"}') === 0 &&
        metric(a, 'ztna_agent_flows_active{protocol="tcp"}') === 0;
    });
    const samples = await scrape(relayMetrics);
    assert.equal(metric(samples, "ztna_relay_channels_closed_total"), 1);
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the revocation.
    }
    await tunnel.stop();
    await backend.close();
  }
});

Deno.test("reload: a connector that drops its TCP service ends that service's open TCP connections", async () => {
  const echo = startTcpServer(echoTcp);
  const spare = startTcpServer(echoTcp);
  const tunnel = await startTcpTunnel({ backends: { echo: echo.port, spare: spare.port } });
  const { connector } = tunnel;
  const conn = await connectAndPing(tunnel.ports.echo);
  try {
    const configPath = connector.configPath!;
    const config = JSON.parse(await Deno.readTextFile(configPath));
    delete config.services.echo;
    await Deno.writeTextFile(configPath, JSON.stringify(config));
    connector.signal("SIGHUP");
    await connector.waitForLog((l) => l.msg === "services reloaded");
    await connectionEnds(conn);
    await waitFor("the flow closed at the connector", async () => {
      const samples = await scrape(String(connector.ready.metrics));
      return metric(samples, 'ztna_connector_flows_active{protocol="tcp"}') === 0;
    });
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the reload.
    }
    await tunnel.stop();
    await Promise.allSettled([echo.close(), spare.close()]);
  }
});
