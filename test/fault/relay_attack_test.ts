/**
 * Attacks by authenticated peers on a real relay process (issue 12, findings 1–3 and 8–10):
 * each shows the relay alive, the attacker's connection closed or limited and counted, and a
 * legitimate agent's flow working throughout.
 */
import assert from "node:assert/strict";
import type { ControlMessage } from "../../shared/protocol/control.ts";
import { closedWithin, closePeers, dialPeer, type Peer } from "../_support/attack_client.ts";
import { metric, portOf, scrape, startEchoService, udpClient } from "../_support/harness.ts";
import { startTrio, type Trio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";

const enc = new TextEncoder();

/**
 * relay + connector-1 (echo) + agent-1, with a second service `mute` that only the test's
 * own connector-2 serves; agent-2 (the attacker) may use both.
 */
async function startStage(relay: Record<string, unknown> = {}) {
  const echo = await startEchoService();
  const agents = ["agent-1", "agent-2"];
  const trio: Trio = await startTrio({
    backends: { echo: `udp://127.0.0.1:${echo.port}` },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    agents,
    extraClients: ["connector-2"],
    relay: {
      services: {
        echo: { connectors: ["connector-1"], agents },
        mute: { connectors: ["connector-2"], agents },
      },
      ...relay,
    },
    processes: [echo.proc],
  });
  const relayPort = portOf(trio.relayAddress);
  const relayMetrics = String(trio.relay.ready.metrics);
  const client = udpClient();
  let seq = 0;
  /** The legitimate agent's flow echoes one datagram (bounded retries). */
  const echoes = async (label: string) => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const text = `${label} ${seq++}`;
      await client.send(enc.encode(text), portOf(trio.listen[0]));
      const reply = await client.receive(2000);
      if (reply !== null && new TextDecoder().decode(reply) === text) return;
    }
    assert.fail(`${label}: the legitimate agent's flow stopped echoing`);
  };
  const dial = (identity: string, options: Partial<Parameters<typeof dialPeer>[0]> = {}) =>
    dialPeer({ relayPort, tls: trio.pki.tls(identity), ...options });
  let exited = false;
  trio.relay.status.then(() => exited = true);
  const alive = () => assert.ok(!exited, `relay exited: ${trio.relay.stderr.join("\n")}`);
  return {
    trio,
    relayMetrics,
    echoes,
    dial,
    alive,
    async stop() {
      client.close();
      await closePeers();
      await trio.stop();
    },
  };
}

const isType = <T extends ControlMessage["type"]>(type: T) =>
(m: ControlMessage): m is
  & ControlMessage
  & { type: T } => m.type === type;

async function closeReason(peer: Peer, ms = 15_000): Promise<string> {
  const info = await closedWithin(peer, ms);
  assert.ok(info !== null, "the relay closed the attacker's connection");
  return `${info.peer?.code}:${info.peer?.reason}`;
}

Deno.test("attack 1: STOP_SENDING on the control stream fails that channel, not the relay", async () => {
  const stage = await startStage();
  try {
    await stage.echoes("before");
    const muteConnector = await stage.dial("connector-2", { role: "connector" });
    muteConnector.send({ type: "register", services: [{ name: "mute", protocol: "udp" }] });
    await muteConnector.next(isType("registered"));

    // The open timer path: opens the connector never answers; the relay's refusal after 5 s
    // is written to the stopped stream from a timer.
    const attacker = await stage.dial("agent-2");
    attacker.conn.streamStop(0, 77);
    for (let id = 1; id <= 3; id++) {
      attacker.send({ type: "open", id, service: "mute", protocol: "udp" });
    }
    await waitFor(
      "the opens reaching the connector",
      () => muteConnector.messages.filter((m) => m.type === "open").length === 3,
    );
    // The announce path: the connector goes away inside a QUIC event, and the relay tells
    // every allowed agent `service_down`, among them one whose stream is stopped.
    const silent = await stage.dial("agent-2");
    silent.conn.streamStop(0, 78);
    await stage.echoes("with stopped streams");

    assert.equal(await closeReason(attacker), "1:control_stream_closed");
    muteConnector.conn.close(0, "bye");
    assert.equal(await closeReason(silent), "1:control_stream_closed");

    stage.alive();
    await stage.echoes("after");
    const samples = await scrape(stage.relayMetrics);
    assert.ok(
      metric(samples, 'ztna_relay_protocol_violations_total{reason="control_stream_closed"}') >=
        2,
    );
    assert.equal(metric(samples, "ztna_relay_handler_errors_total"), 0, "no handler failed");
  } finally {
    await stage.stop();
  }
});

Deno.test("attack 2: a 4 KiB DATAGRAM is dropped as too_large; the relay lives", async () => {
  const stage = await startStage();
  try {
    // 8 KiB packets: loopback's MTU carries them (a 64 KiB one would not fit its IP header).
    const attacker = await stage.dial("agent-2", { maxUdpPayload: 8192 });
    const { flow, maxDatagram } = await attacker.openUdp("echo");
    assert.ok(maxDatagram !== undefined && maxDatagram > 1000 && maxDatagram < 1500, "advertised");
    assert.ok((attacker.conn.maxDatagramSize() ?? 0) > 4096, "the attacker can send 4 KiB");
    // One that fits goes through and echoes back: the limit is honest, not a blanket drop.
    assert.ok(attacker.sendOnFlow(flow, enc.encode("small")));
    await waitFor("the small one echoed", () => attacker.datagrams.length >= 1);
    for (let i = 0; i < 10; i++) assert.ok(attacker.sendOnFlow(flow, new Uint8Array(4096)));
    await waitFor(
      "the big ones counted",
      async () =>
        metric(await scrape(stage.relayMetrics), 'ztna_relay_drops_total{reason="too_large"}') >=
          10,
    );
    // The crash came from the next QUIC timer after the first throw: give timers time to run.
    await new Promise((r) => setTimeout(r, 1500));
    stage.alive();
    await stage.echoes("after");
    assert.equal(attacker.conn.closed, false, "a too-large frame is dropped, not fatal");
  } finally {
    await stage.stop();
  }
});

Deno.test("attack 3: a stopped control stream cannot dodge a revocation, block reloads or the drain", async () => {
  const stage = await startStage();
  const { relay, agent } = stage.trio;
  const configPath = relay.configPath!;
  const original = JSON.parse(await Deno.readTextFile(configPath));
  const applied = () => relay.logs.filter((l) => l.msg === "policy applied").length;
  try {
    await stage.echoes("before");
    const attacker = await stage.dial("agent-2");
    const { flow } = await attacker.openUdp("echo");
    attacker.conn.streamStop(0, 77);
    assert.ok(attacker.sendOnFlow(flow, enc.encode("attacker")));
    await waitFor("the attacker's flow working", () => attacker.datagrams.length >= 1);

    // Revoke echo for both agents.
    const revoked = structuredClone(original);
    revoked.services.echo.agents = [];
    await Deno.writeTextFile(configPath, JSON.stringify(revoked));
    relay.signal("SIGHUP");
    const line = await relay.waitForLog((l) => l.msg === "policy applied", 10_000);
    assert.equal(line.flows_closed, 2, "both agents' flows were revoked");
    assert.ok(!relay.logs.some((l) => String(l.msg).startsWith("reload rejected")));
    await waitFor(
      "no UDP flow left at the relay",
      async () =>
        metric(await scrape(stage.relayMetrics), 'ztna_relay_flows_active{protocol="udp"}') === 0,
    );
    assert.equal(await closeReason(attacker), "1:control_stream_closed");
    const received = attacker.datagrams.length;
    attacker.sendOnFlow(flow, enc.encode("after revoke"));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(attacker.datagrams.length, received, "nothing reaches a revoked flow");

    // Later reloads apply too; the legitimate agent gets its service back.
    await Deno.writeTextFile(configPath, JSON.stringify(original));
    relay.signal("SIGHUP");
    await waitFor("the second reload applied", () => applied() === 2);
    await stage.echoes("after restore");

    // A drain with a stopped stream around: exit 0, and the agent was told `draining`.
    const again = await stage.dial("agent-2");
    again.conn.streamStop(0, 79);
    assert.equal(await relay.stop("SIGTERM", 15_000), 0);
    assert.ok(agent.logs.some((l) => l.msg === "relay is draining"), "agent heard draining");
  } finally {
    await stage.stop();
  }
});

Deno.test("attack 8: a flapping connector is shed and agents hear a bounded number of announcements", async () => {
  const stage = await startStage({ limits: { registrations_per_minute: 60 } });
  try {
    const listeners = await Promise.all([1, 2, 3, 4, 5].map(() => stage.dial("agent-2")));
    const flapper = await stage.dial("connector-2", { role: "connector" });
    const started = performance.now();
    let sent = 0;
    for (; sent < 770 && !flapper.conn.closed; sent++) {
      const ok = sent % 2 === 0
        ? flapper.send({ type: "register", services: [{ name: "mute", protocol: "udp" }] })
        : flapper.send({ type: "deregister", services: ["mute"] });
      if (!ok) break;
      if (sent % 50 === 49) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(await closeReason(flapper), "3:registrations_per_minute");
    const seconds = (performance.now() - started) / 1000;
    await new Promise((r) => setTimeout(r, 1500));
    const announced = listeners.map((peer) =>
      peer.messages.filter((m) => m.type === "service_up" || m.type === "service_down").length
    );
    // At most one announcement per second per service, plus the final service_down.
    for (const count of announced) {
      assert.ok(count <= Math.ceil(seconds) + 3, `${count} announcements in ${seconds} s`);
    }
    const samples = await scrape(stage.relayMetrics);
    assert.equal(
      metric(samples, 'ztna_relay_limit_hits_total{limit="registrations_per_minute"}'),
      1,
    );
    console.log(
      `flapping connector: ${sent} frames sent, announcements per agent ${announced.join("/")}`,
    );
    stage.alive();
    await stage.echoes("after");
  } finally {
    await stage.stop();
  }
});

Deno.test("attack 9: a connector revoked while an open is pending cannot complete it", async () => {
  const stage = await startStage();
  const { relay } = stage.trio;
  const configPath = relay.configPath!;
  try {
    const mute = await stage.dial("connector-2", { role: "connector" });
    mute.send({ type: "register", services: [{ name: "mute", protocol: "udp" }] });
    await mute.next(isType("registered"));
    const agent = await stage.dial("agent-2");
    agent.send({ type: "open", id: 5, service: "mute", protocol: "udp" });
    const open = await mute.next(isType("open"));
    assert.equal(open.agent, "agent-2", "the connector learns whom the flow is for");

    const revoked = JSON.parse(await Deno.readTextFile(configPath));
    revoked.services.mute.connectors = [];
    await Deno.writeTextFile(configPath, JSON.stringify(revoked));
    relay.signal("SIGHUP");
    await relay.waitForLog((l) => l.msg === "policy applied", 10_000);

    mute.send({ type: "opened", id: open.id, flow: open.flow ?? open.id });
    const answer = await agent.next((m): m is ControlMessage & { type: "refused" | "opened" } =>
      (m.type === "refused" || m.type === "opened") && m.id === 5
    );
    assert.equal(answer.type, "refused");
    assert.equal(answer.type === "refused" && answer.reason, "forbidden");
    await mute.next((m): m is ControlMessage => m.type === "close");
    const samples = await scrape(stage.relayMetrics);
    assert.equal(metric(samples, 'ztna_relay_flows_active{protocol="udp"}'), 0, "no flow made");
    stage.alive();
    await stage.echoes("after");
  } finally {
    await stage.stop();
  }
});

Deno.test("attack 10: a flood of 60 KiB error messages is shed and barely logged", async () => {
  const stage = await startStage();
  const { relay } = stage.trio;
  try {
    const attacker = await stage.dial("agent-2");
    // Ten of the biggest errors a frame can carry, then a flood of small ones.
    const big = "x".repeat(60_000);
    for (let i = 0; i < 2000 && !attacker.conn.closed; i++) {
      const message = i < 10 ? big : "y".repeat(500);
      if (!attacker.send({ type: "error", code: "boom", message })) break;
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(await closeReason(attacker), "3:control_frames_per_second");
    const logged = relay.logs.filter((l) => l.msg === "peer reported an error");
    assert.ok(logged.length <= 2, `${logged.length} error lines logged`);
    for (const line of logged) assert.ok(String(line.detail).length <= 256);
    const bytes = relay.logs.reduce((n, l) => n + JSON.stringify(l).length, 0);
    assert.ok(bytes < 256 * 1024, `relay log ${bytes} bytes`);
    stage.alive();
    await stage.echoes("after");
  } finally {
    await stage.stop();
  }
});
