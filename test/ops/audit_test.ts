/**
 * The audit log end to end (docs/AUDIT.md): real relay, connector and agents on loopback.
 * A UDP flow, a TCP flow, a refused open and a policy reload produce the documented records
 * with the right identity, service, rule, reasons and byte counts (exactly what the test
 * sent); a relay whose audit file cannot be written keeps relaying and counts the drops.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type ComponentProcess,
  metric,
  portOf,
  scrape,
  startEchoService,
  udpClient,
} from "../_support/harness.ts";
import { startTrio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";
import { readAll, startEchoTrio, writeAll } from "../_support/tcp_util.ts";

type AuditRecord = Record<string, unknown>;

/** Audit records a process wrote to stdout (beside its logs). */
const stdoutAudit = (proc: ComponentProcess, event: string) =>
  proc.logs.filter((l) => l.audit === event);

async function fileAudit(path: string): Promise<AuditRecord[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l !== "").map((l) =>
      JSON.parse(l)
    );
  } catch {
    return [];
  }
}

Deno.test("audit: UDP and TCP flows, a refused open and a policy reload are recorded at all three hops", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ztna-audit-" });
  const auditFile = join(dir, "relay-audit.jsonl");
  const trio = await startEchoTrio({
    extraClients: ["agent-2"],
    // Strict: the derived sandbox (write access to the audit files only) must be exact.
    relay: { id: "relay-a", strict_sandbox: true, audit: { destination: "file", file: auditFile } },
    // A short idle time ends the UDP flow (and so writes its close) soon after the test.
    agent: { flow_idle_ms: 1000 },
    cleanups: [() => Deno.remove(dir, { recursive: true })],
  });
  try {
    const { relay, connector, agent } = trio;
    const relayAudit = () => fileAudit(auditFile);

    // The connector's registration, with the rule per service.
    const register = await waitFor(
      "register record",
      async () => (await relayAudit()).find((r) => r.audit === "register"),
    );
    assert.equal(register.relay_id, "relay-a");
    assert.equal(register.identity, "connector-1");
    assert.equal(register.role, "connector");
    assert.deepEqual(new Set(register.services as string[]), new Set(["echo", "tcpecho"]));
    assert.deepEqual(register.rules, {
      echo: "services.echo.connectors",
      tcpecho: "services.tcpecho.connectors",
    });

    // UDP: three datagrams of 10, 20 and 30 bytes, each echoed.
    const client = udpClient();
    const udpPort = portOf(trio.listen[0]);
    let sent = 0;
    for (const size of [10, 20, 30]) {
      await client.send(new Uint8Array(size).fill(size), udpPort);
      sent += size;
      assert.equal((await client.receive(5000))?.length, size, `echo of ${size} bytes`);
    }
    const udpLocal = `127.0.0.1:${client.port}`;

    // TCP: 100,000 bytes each way, then both FINs.
    const tcpConn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(trio.listen[1]) });
    const payload = new Uint8Array(100_000).map((_, i) => i % 251);
    await writeAll(tcpConn, payload);
    await tcpConn.closeWrite();
    const back = await readAll(tcpConn, 10_000);
    tcpConn.close();
    assert.equal(back.length, payload.length);

    // Relay: the channel of the agent's end-to-end session to connector-1, which carries
    // both flows. The relay never sees the flows themselves (their records follow below).
    const channelOpen = await waitFor(
      "relay channel_open",
      async () =>
        (await relayAudit()).find((r) => r.audit === "channel_open" && r.identity === "agent-1"),
      15_000,
    );
    assert.equal(channelOpen.relay_id, "relay-a");
    assert.equal(channelOpen.role, "agent");
    assert.equal(channelOpen.connector, "connector-1");
    assert.match(String(channelOpen.peer), /^127\.0\.0\.1:\d+$/);
    assert.match(String(channelOpen.connector_peer), /^127\.0\.0\.1:\d+$/);
    assert.equal(channelOpen.rule, `services.${channelOpen.service}.agents`);
    assert.deepEqual(channelOpen.services, ["echo", "tcpecho"]);
    assert.equal(typeof channelOpen.channel, "number");
    assert.match(String(channelOpen.session), /^[0-9a-f]{32}$/);
    assert.ok(!Number.isNaN(Date.parse(String(channelOpen.time))));

    // Connector and agent: their own view, with the backend and local addresses.
    const connectorClose = (protocol: string) =>
      waitFor(
        `connector ${protocol} flow_close`,
        () => stdoutAudit(connector, "flow_close").find((r) => r.protocol === protocol),
        15_000,
      );
    const cUdp = await connectorClose("udp");
    assert.equal(cUdp.agent, "agent-1");
    assert.equal(cUdp.backend, `127.0.0.1:${trio.backendPorts.echo}`);
    assert.equal(cUdp.bytes_to_service, sent);
    assert.equal(cUdp.bytes_to_agent, sent);
    const cTcp = await connectorClose("tcp");
    assert.equal(cTcp.backend, `127.0.0.1:${trio.backendPorts.tcpecho}`);
    assert.equal(cTcp.bytes_to_service, payload.length);
    assert.equal(cTcp.bytes_to_agent, payload.length);
    assert.equal(cTcp.reason, "complete");
    const agentClose = (protocol: string) =>
      waitFor(
        `agent ${protocol} flow_close`,
        () => stdoutAudit(agent, "flow_close").find((r) => r.protocol === protocol),
        15_000,
      );
    const aUdp = await agentClose("udp");
    assert.equal(aUdp.local, udpLocal);
    assert.equal(aUdp.service, "echo");
    assert.equal(aUdp.bytes_to_service, sent);
    assert.equal(aUdp.bytes_to_agent, sent);
    assert.equal(aUdp.reason, "idle");
    const aTcp = await agentClose("tcp");
    assert.equal(aTcp.bytes_to_service, payload.length);
    assert.equal(aTcp.bytes_to_agent, payload.length);
    assert.ok(stdoutAudit(agent, "flow_open").some((r) => r.local === udpLocal));

    // A refused open: agent-2 is not in the policy of echo.
    const stranger = await trio.startAgent("agent-2");
    await stranger.waitForLog((l) => l.msg === "relay link up", 20_000);
    const strangerClient = udpClient();
    await strangerClient.send(new Uint8Array(5), portOf((stranger.ready.listen as string[])[0]));
    const refused = await waitFor(
      "relay flow_refused",
      async () =>
        (await relayAudit()).find((r) => r.audit === "flow_refused" && r.identity === "agent-2"),
    );
    assert.equal(refused.reason, "forbidden");
    assert.equal(refused.service, "echo");
    assert.equal(refused.rule, "services.echo.agents");
    assert.equal(refused.role, "agent");
    const agentRefused = await waitFor(
      "agent-2 flow_refused",
      () => stdoutAudit(stranger, "flow_refused")[0],
    );
    assert.equal(agentRefused.reason, "forbidden");
    assert.equal(agentRefused.local, `127.0.0.1:${strangerClient.port}`);
    strangerClient.close();

    // An authentication failure: a certificate from another CA is refused in the handshake.
    const mallory = await trio.startAgent("mallory", await trio.pki.strangerTls("mallory"), false);
    const authFailure = await waitFor(
      "auth_failure record",
      async () => (await relayAudit()).find((r) => r.audit === "auth_failure"),
      15_000,
    );
    assert.match(String(authFailure.reason), /^tls_/);
    assert.match(String(authFailure.peer), /^127\.0\.0\.1:\d+$/);
    await mallory.stop();

    // A policy reload: agent-2 gains echo; agent-1 loses tcpecho.
    const config = JSON.parse(await Deno.readTextFile(relay.configPath!));
    config.services.echo.agents = ["agent-1", "agent-2"];
    config.services.tcpecho.agents = [];
    config.services.extra = { connectors: ["connector-1"], agents: ["agent-1"] };
    await Deno.writeTextFile(relay.configPath!, JSON.stringify(config));
    relay.signal("SIGHUP");
    const reload = await waitFor(
      "policy_reload record",
      async () => (await relayAudit()).find((r) => r.audit === "policy_reload"),
    );
    assert.deepEqual(reload.services_added, ["extra"]);
    assert.deepEqual(reload.services_removed, []);
    assert.deepEqual(reload.services_changed, {
      echo: { agents_added: ["agent-2"] },
      tcpecho: { agents_removed: ["agent-1"] },
    });
    assert.equal(reload.services, 3);
    client.close();

    // A connector that drains deregisters everything.
    await connector.stop("SIGTERM");
    const deregister = await waitFor(
      "deregister record",
      async () => (await relayAudit()).find((r) => r.audit === "deregister"),
    );
    assert.equal(deregister.identity, "connector-1");
    assert.equal(deregister.services, "all");
    assert.equal(deregister.cause, "connector");

    // The drained connector closed the session: its channel's record carries the encrypted
    // totals, more than the flows carried inside.
    const channelClose = await waitFor(
      "relay channel_close",
      async () =>
        (await relayAudit()).find((r) =>
          r.audit === "channel_close" && r.channel === channelOpen.channel
        ),
      15_000,
    );
    assert.equal(channelClose.identity, "agent-1");
    assert.equal(channelClose.connector, "connector-1");
    assert.equal(typeof channelClose.duration_ms, "number");
    assert.ok((channelClose.bytes_to_connector as number) > sent + payload.length);
    assert.ok((channelClose.bytes_to_agent as number) > sent + payload.length);
    assert.ok((channelClose.packets_to_connector as number) >= 3);

    // Every record written was handed over: none dropped.
    const samples = await scrape(String(relay.ready.metrics));
    assert.equal(metric(samples, 'ztna_relay_audit_dropped_total{reason="queue_full"}'), 0);
    assert.equal(metric(samples, 'ztna_relay_audit_dropped_total{reason="write_error"}'), 0);
    assert.equal(metric(samples, 'ztna_relay_audit_records_total{event="channel_close"}'), 1);
    console.log(
      `audit: relay wrote ${(await relayAudit()).length} records; UDP ${sent} B each way in 3 ` +
        `datagrams, TCP ${payload.length} B each way in ${cTcp.packets_to_service}/` +
        `${cTcp.packets_to_agent} chunks; the channel carried ${channelClose.bytes_to_connector}/` +
        `${channelClose.bytes_to_agent} B encrypted`,
    );
  } finally {
    await trio.stop();
  }
});

Deno.test("audit: an unwritable audit file costs audit records, never flows; drops are counted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ztna-audit-" });
  // A directory where the file should be: every open fails (root ignores mode bits, so
  // chmod would not make a file unwritable for this test).
  const auditFile = join(dir, "audit.jsonl");
  await Deno.mkdir(auditFile);
  const echo = await startEchoService();
  const trio = await startTrio({
    backends: { echo: `udp://127.0.0.1:${echo.port}` },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    relay: { audit: { destination: "file", file: auditFile } },
    processes: [echo.proc],
    cleanups: [() => Deno.remove(dir, { recursive: true })],
  });
  try {
    const client = udpClient();
    const port = portOf(trio.listen[0]);
    for (let i = 0; i < 20; i++) {
      await client.send(new Uint8Array([i]), port);
      assert.deepEqual(await client.receive(5000), new Uint8Array([i]), `echo ${i}`);
    }
    client.close();
    const address = String(trio.relay.ready.metrics);
    const dropped = await waitFor("audit drops counted", async () => {
      const samples = await scrape(address);
      const n = metric(samples, 'ztna_relay_audit_dropped_total{reason="write_error"}') +
        metric(samples, 'ztna_relay_audit_dropped_total{reason="queue_full"}');
      // register and channel_open at least.
      return n >= 2 ? n : undefined;
    });
    const samples = await scrape(address);
    assert.ok(metric(samples, 'ztna_relay_datagrams_relayed_total{direction="to_agent"}') >= 20);
    assert.equal(metric(samples, 'ztna_relay_audit_records_total{event="channel_open"}'), 0);
    console.log(`audit: unwritable file: 20/20 datagrams echoed, ${dropped} records dropped`);
  } finally {
    await trio.stop();
  }
});

Deno.test("audit: a destination that never takes a byte (a FIFO nobody reads) stalls no flow", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ztna-audit-" });
  const fifo = join(dir, "audit.fifo");
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(made.success, "mkfifo");
  const echo = await startEchoService();
  const trio = await startTrio({
    backends: { echo: `udp://127.0.0.1:${echo.port}` },
    // `vault` is not the agent's to use: each of its local clients costs a refused open.
    forwards: [
      { listen: "udp://127.0.0.1:0", service: "echo" },
      { listen: "udp://127.0.0.1:0", service: "vault" },
    ],
    // Opening a FIFO without a reader blocks forever: the writer hangs on its first record.
    relay: {
      audit: { destination: "file", file: fifo, queue: 2 },
      services: {
        echo: { connectors: ["connector-1"], agents: ["agent-1"] },
        vault: { connectors: ["connector-1"], agents: ["agent-2"] },
      },
    },
    extraClients: ["agent-2"],
    processes: [echo.proc],
    cleanups: [() => Deno.remove(dir, { recursive: true })],
  });
  try {
    const [port, vaultPort] = trio.listen.map(portOf);
    // Five local clients: five flows through the session's channel (one channel_open).
    for (let c = 0; c < 5; c++) {
      const client = udpClient();
      for (let i = 0; i < 4; i++) {
        await client.send(new Uint8Array([c, i]), port);
        assert.deepEqual(await client.receive(5000), new Uint8Array([c, i]), `client ${c} #${i}`);
      }
      client.close();
    }
    // Five local clients of vault: five refused opens, five flow_refused records.
    const address = String(trio.relay.ready.metrics);
    for (let c = 0; c < 5; c++) {
      const client = udpClient();
      await client.send(new Uint8Array([c]), vaultPort);
      await waitFor(
        `refusal ${c + 1}`,
        async () =>
          metric(await scrape(address), 'ztna_relay_flow_refusals_total{reason="forbidden"}') ===
            c + 1,
      );
      client.close();
    }
    const samples = await scrape(address);
    assert.ok(metric(samples, 'ztna_relay_datagrams_relayed_total{direction="to_agent"}') >= 20);
    // register in the writer, channel_open and one refusal queued, the other four dropped.
    assert.equal(metric(samples, 'ztna_relay_audit_dropped_total{reason="queue_full"}'), 4);
    // Shutdown is bounded too: the flush gives up, the relay exits cleanly.
    assert.equal(await trio.relay.stop("SIGTERM", 10_000), 0);
    console.log("audit: stalled FIFO destination: 20/20 datagrams echoed, 4 records dropped");
  } finally {
    await trio.stop();
  }
});

Deno.test("audit: a connector that vanishes is recorded as deregistered by disconnect", async () => {
  const echo = await startEchoService();
  // A short idle timeout, so the relay notices the killed connector soon (pings every 0.7 s).
  const trio = await startTrio({
    backends: { echo: `udp://127.0.0.1:${echo.port}` },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    relay: { idle_timeout_ms: 2000 },
    connector: { idle_timeout_ms: 2000 },
    agent: { idle_timeout_ms: 2000 },
    processes: [echo.proc],
  });
  try {
    await trio.connector.stop("SIGKILL");
    const record = await waitFor(
      "deregister on disconnect",
      () => stdoutAudit(trio.relay, "deregister").find((r) => r.cause === "disconnect"),
      15_000,
    );
    assert.equal(record.identity, "connector-1");
    assert.deepEqual(record.services, ["echo"]);
  } finally {
    await trio.stop();
  }
});
