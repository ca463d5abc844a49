/**
 * End-to-end sessions against hostile peers, with a real relay and real connector or agent:
 * an agent whose certificate is not the identity the relay announced, a connector presenting
 * another identity than the one the agent was told, a handshake that never finishes, and a
 * flood of session opens, a connector that picks its own flow ids. Each is refused, counted
 * and logged on the refusing side, and the product's own flows carry on.
 */
import assert from "node:assert/strict";
import { type ControlMessage, SESSION_GONE } from "../../shared/protocol/control.ts";
import {
  ChannelPacketType,
  readChannelId,
  writeChannelHeader,
} from "../../shared/protocol/channel_packet.ts";
import { type ControlChannel, createControlChannel } from "../../shared/control_channel.ts";
import {
  acceptE2eSession,
  type E2eSession,
  openE2eSession,
  type SessionPath,
} from "../../shared/quic/e2e_session.ts";
import { udpTarget } from "../../shared/quic/udp_socket.ts";
import { readTlsFiles } from "../../shared/tls_files.ts";
import { closePeers, dialPeer, type Peer } from "../_support/attack_client.ts";
import { metric, portOf, scrape, startEchoService, udpClient } from "../_support/harness.ts";
import { echoTcp, startTcpServer, withTimeout } from "../_support/tcp_util.ts";
import { startTrio, type Trio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";

const isType =
  <T extends ControlMessage["type"]>(type: T) =>
  (m: ControlMessage): m is ControlMessage & { type: T } => m.type === type;

const sessionId = () => crypto.randomUUID().replaceAll("-", "");

/** A relay, connector-1 serving `echo` (UDP) and `vault` (TCP), and agent-1's process. */
async function startStage(extra: { relay?: Record<string, unknown> } = {}): Promise<
  { trio: Trio; stop(): Promise<void> }
> {
  const echo = await startEchoService();
  const vault = startTcpServer(echoTcp);
  const trio = await startTrio({
    backends: { echo: `udp://127.0.0.1:${echo.port}`, vault: `tcp://127.0.0.1:${vault.port}` },
    forwards: [
      { listen: "udp://127.0.0.1:0", service: "echo" },
      { listen: "tcp://127.0.0.1:0", service: "vault" },
    ],
    agents: ["agent-1", "agent-2"],
    extraClients: ["connector-2", "connector-3"],
    processes: [echo.proc],
    cleanups: [() => vault.close()],
    ...extra,
  });
  return {
    trio,
    async stop() {
      await closePeers();
      await trio.stop();
    },
  };
}

/** Asks the relay through `peer` for a channel to `service`; returns the agent's path. */
async function openChannel(peer: Peer, port: number, service: string): Promise<SessionPath> {
  const id = Math.floor(Math.random() * 1e9);
  peer.send({ type: "session_open", id, service, session: sessionId() });
  const opened = await peer.next(
    (m): m is ControlMessage & { type: "session_opened" } =>
      m.type === "session_opened" && m.id === id,
  );
  return {
    label: `relay ${port}`,
    socket: peer.conn.socket,
    target: udpTarget("127.0.0.1", port),
    channel: opened.channel,
  };
}

/** A hand-driven connector: registered through the relay, it accepts sessions on its own. */
interface FakeConnector {
  /** Every session it accepted. */
  sessions: E2eSession[];
  /** Waits for the relay's `channel`, answers `channel_ready`; returns the announcement. */
  takeChannel(): Promise<ControlMessage & { type: "channel" }>;
}

/**
 * Dials the relay as connector-2 (instance `0badc0de0badc0de`) and registers `service`;
 * each session's first packet goes to `accept` with the channel's path.
 */
async function fakeConnector(
  trio: Trio,
  service: { name: string; protocol: "udp" | "tcp" },
  accept: (packet: Uint8Array, path: SessionPath) => E2eSession | null,
): Promise<FakeConnector> {
  const port = portOf(trio.relayAddress);
  const sessions: E2eSession[] = [];
  const held: { path?: SessionPath } = {};
  const peer = await dialPeer({
    relayPort: port,
    tls: trio.pki.tls("connector-2"),
    role: "connector",
    instance: "0badc0de0badc0de",
    onChannelPacket(packet) {
      const { path } = held;
      if (path === undefined || readChannelId(packet) !== path.channel) return;
      if (packet[0] !== ChannelPacketType.DATA) return;
      for (const session of sessions) if (session.receive(packet, path)) return;
      const accepted = accept(packet, path);
      if (accepted !== null) sessions.push(accepted);
    },
  });
  peer.send({ type: "register", services: [service] });
  await peer.next(isType("registered"));
  return {
    sessions,
    async takeChannel() {
      const announced = await peer.next(isType("channel"));
      held.path = {
        label: "relay",
        socket: peer.conn.socket,
        target: udpTarget("127.0.0.1", port),
        channel: announced.channel,
      };
      peer.send({ type: "channel_ready", channel: announced.channel });
      return announced;
    },
  };
}

/** A UDP echo through the agent's forward still works. */
async function agentStillServes(trio: Trio): Promise<void> {
  const client = udpClient();
  try {
    await client.send(new Uint8Array([7]), portOf(trio.listen[0]));
    assert.deepEqual(await client.receive(5000), new Uint8Array([7]), "agent-1's own flow");
  } finally {
    client.close();
  }
}

Deno.test("e2e identity: an agent whose certificate is not the identity the relay announced is refused by the connector", async () => {
  const stage = await startStage();
  const { trio } = stage;
  const port = portOf(trio.relayAddress);
  let session: E2eSession | undefined;
  let path: SessionPath | undefined;
  try {
    // The relay knows this connection as agent-2; the session presents agent-1's certificate.
    const peer = await dialPeer({
      relayPort: port,
      tls: trio.pki.tls("agent-2"),
      onChannelPacket(packet) {
        if (session === undefined || path === undefined) return;
        if (packet[0] === ChannelPacketType.PONG) session.pong(packet, path);
        else session.receive(packet, path);
      },
    });
    path = await openChannel(peer, port, "vault");
    let closedCode: number | undefined;
    session = openE2eSession({
      tls: readTlsFiles(trio.pki.tls("agent-1")),
      expectedPeer: "connector-1",
      path,
      handlers: { onClosed: (info) => void (closedCode = info.peer?.code) },
    });
    const connectorMetrics = String(trio.connector.ready.metrics);
    await waitFor(
      "the mismatch counted at the connector",
      async () =>
        metric(
          await scrape(connectorMetrics),
          'ztna_connector_session_refusals_total{reason="identity_mismatch"}',
        ) === 1,
    );
    const logged = await trio.connector.waitForLog((l) =>
      l.msg === "end-to-end session refused: peer is not the announced agent"
    );
    assert.equal(logged.announced, "agent-2");
    assert.equal(logged.presented, "agent-1");
    await waitFor("the session closed FORBIDDEN", () => closedCode !== undefined);
    assert.equal(closedCode, 2);
    const samples = await scrape(connectorMetrics);
    assert.equal(metric(samples, "ztna_connector_sessions_opened_total"), 0);
    await agentStillServes(trio);
  } finally {
    session?.conn.close(0, "done");
    await stage.stop();
  }
});

Deno.test("e2e identity: a connector presenting another identity than the relay announced is refused by the agent", async () => {
  const stage = await startStage({
    relay: {
      services: {
        echo: { connectors: ["connector-1"], agents: ["agent-1"] },
        // Only the test's connector-2 serves vault here.
        vault: { connectors: ["connector-2"], agents: ["agent-1"] },
      },
    },
  });
  const { trio } = stage;
  let fake: FakeConnector | undefined;
  try {
    // connector-2 to the relay, but its end-to-end sessions present connector-3's certificate.
    fake = await fakeConnector(
      trio,
      { name: "vault", protocol: "tcp" },
      (packet, path) =>
        acceptE2eSession(packet, {
          tls: readTlsFiles(trio.pki.tls("connector-3")),
          expectedPeer: "agent-1",
          path,
          handlers: {},
        }),
    );
    // agent-1's process opens vault: the relay announces connector-2.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(trio.listen[1]) });
    const announced = await fake.takeChannel();
    assert.equal(announced.agent, "agent-1");
    const agentMetrics = String(trio.agent.ready.metrics);
    await waitFor(
      "the mismatch counted at the agent",
      async () =>
        metric(
          await scrape(agentMetrics),
          'ztna_agent_session_refusals_total{reason="identity_mismatch"}',
        ) >= 1,
    );
    const logged = await trio.agent.waitForLog((l) =>
      l.msg === "end-to-end session refused: peer is not the announced connector"
    );
    assert.equal(logged.announced, "connector-2");
    assert.equal(logged.presented, "connector-3");
    // The local connection that asked for vault is refused, not left hanging.
    const read = await withTimeout(
      conn.read(new Uint8Array(8)).catch(() => null),
      15_000,
      "the refused connection to close",
    );
    assert.equal(read, null);
    conn.close();
    assert.equal(
      metric(await scrape(agentMetrics), 'ztna_agent_flows_opened_total{protocol="tcp"}'),
      0,
    );
    await agentStillServes(trio);
  } finally {
    for (const session of fake?.sessions ?? []) session.conn.close(0, "done");
    await stage.stop();
  }
});

Deno.test("e2e attacks: a handshake that never finishes is closed by the connector; a flood of session opens is capped", async () => {
  const stage = await startStage();
  const { trio } = stage;
  const port = portOf(trio.relayAddress);
  let session: E2eSession | undefined;
  try {
    // agent-2 sends its first flight and then ignores everything the connector answers.
    const peer = await dialPeer({ relayPort: port, tls: trio.pki.tls("agent-2") });
    const path = await openChannel(peer, port, "vault");
    session = openE2eSession({
      tls: readTlsFiles(trio.pki.tls("agent-2")),
      expectedPeer: "connector-1",
      path,
      handlers: {},
    });
    const connectorMetrics = String(trio.connector.ready.metrics);
    // The connector's deadline is 10 s; the wait is a hang guard beyond it.
    await waitFor(
      "the unfinished handshake closed",
      async () =>
        metric(
          await scrape(connectorMetrics),
          'ztna_connector_session_refusals_total{reason="handshake_timeout"}',
        ) >= 1,
      20_000,
    );
    session.conn.close(0, "done");

    // A flood of session opens from one connection: channels are capped per connection.
    const flooder = await dialPeer({ relayPort: port, tls: trio.pki.tls("agent-2") });
    const FLOOD = 100;
    for (let id = 1; id <= FLOOD; id++) {
      flooder.send({ type: "session_open", id, service: "vault", session: sessionId() });
    }
    const answered = () =>
      flooder.messages.filter((m) => m.type === "session_opened" || m.type === "refused");
    await waitFor("every open answered", () => answered().length === FLOOD, 20_000);
    const opened = answered().filter((m) => m.type === "session_opened").length;
    const limited = answered().filter((m) => m.type === "refused" && m.reason === "limit").length;
    const relay = await scrape(String(trio.relay.ready.metrics));
    console.log(
      `e2e attacks: unfinished handshake closed by the connector; flood of ${FLOOD} session ` +
        `opens: ${opened} channels, ${limited} refused (limit)`,
    );
    assert.equal(opened, 64, "limits.channels_per_connection");
    assert.equal(limited, FLOOD - 64);
    assert.equal(
      metric(relay, 'ztna_relay_limit_hits_total{limit="channels_per_connection"}'),
      FLOOD - 64,
    );
    await agentStillServes(trio);
  } finally {
    session?.conn.close(0, "done");
    await stage.stop();
  }
});

Deno.test("e2e attacks: a connector that answers an open with a flow id of its own is cut off by the agent", async () => {
  const stage = await startStage({
    relay: {
      services: {
        // Only the test's connector-2 serves echo here; it speaks the session protocol itself.
        echo: { connectors: ["connector-2"], agents: ["agent-1"] },
        vault: { connectors: ["connector-1"], agents: ["agent-1"] },
      },
    },
  });
  const { trio } = stage;
  let fake: FakeConnector | undefined;
  let closedCode: number | undefined;
  try {
    fake = await fakeConnector(trio, { name: "echo", protocol: "udp" }, (packet, path) => {
      const wired: { control?: ControlChannel } = {};
      const accepted = acceptE2eSession(packet, {
        tls: readTlsFiles(trio.pki.tls("connector-2")),
        expectedPeer: "agent-1",
        path,
        handlers: {
          onStreamReadable: (id) => id === 0 && wired.control?.readable(),
          onStreamWritable: (id) => id === 0 && wired.control?.writable(),
          onClosed: (info) => void (closedCode = info.peer?.code),
        },
      });
      if (accepted === null) return null;
      wired.control = createControlChannel(accepted.conn, {
        onMessage(message) {
          if (message.type !== "open") return;
          wired.control!.send({ type: "opened", id: message.id, flow: message.id + 1000 });
        },
        onProtocolError() {},
      });
      return accepted;
    });
    const client = udpClient();
    try {
      await client.send(new Uint8Array([1]), portOf(trio.listen[0]));
      await fake.takeChannel();
      await waitFor("the agent to close the session", () => closedCode !== undefined, 15_000);
      assert.equal(closedCode, 1, "PROTOCOL_VIOLATION");
      const samples = await scrape(String(trio.agent.ready.metrics));
      assert.ok(metric(samples, 'ztna_agent_drops_total{reason="malformed"}') >= 1);
      assert.equal(metric(samples, 'ztna_agent_flows_opened_total{protocol="udp"}'), 0);
    } finally {
      client.close();
    }
  } finally {
    for (const session of fake?.sessions ?? []) session.conn.close(0, "done");
    await stage.stop();
  }
});

Deno.test("e2e attacks: an agent opening a flow id it already uses is refused; the first flow is intact", async () => {
  const stage = await startStage();
  const { trio } = stage;
  const port = portOf(trio.relayAddress);
  const wired: { session?: E2eSession; path?: SessionPath; control?: ControlChannel } = {};
  const answers: ControlMessage[] = [];
  try {
    const peer = await dialPeer({
      relayPort: port,
      tls: trio.pki.tls("agent-2"),
      onChannelPacket(packet) {
        const { session, path } = wired;
        if (session === undefined || path === undefined) return;
        if (packet[0] === ChannelPacketType.PONG) session.pong(packet, path);
        else session.receive(packet, path);
      },
    });
    wired.path = await openChannel(peer, port, "echo");
    let established = false;
    wired.session = openE2eSession({
      tls: readTlsFiles(trio.pki.tls("agent-2")),
      expectedPeer: "connector-1",
      path: wired.path,
      handlers: {
        onEstablished: () => void (established = true),
        onStreamReadable: (id) => id === 0 && wired.control?.readable(),
        onStreamWritable: (id) => id === 0 && wired.control?.writable(),
      },
    });
    await waitFor("the session up", () => established);
    wired.control = createControlChannel(wired.session.conn, {
      onMessage: (message) => void answers.push(message),
      onProtocolError() {},
    });
    const open = { type: "open", id: 7, service: "echo", protocol: "udp" } as const;
    wired.control.send({ type: "hello", v: 2, role: "agent" });
    wired.control.send(open);
    await waitFor("the first open answered", () => answers.some((m) => m.type === "opened"));
    wired.control.send(open);
    await waitFor("the second open answered", () => answers.length === 2);
    assert.equal(answers[1].type, "refused");
    const samples = await scrape(String(trio.connector.ready.metrics));
    assert.equal(metric(samples, 'ztna_connector_drops_total{reason="duplicate_flow"}'), 1);
    assert.equal(
      metric(samples, 'ztna_connector_flows_active{protocol="udp"}'),
      1,
      "the first flow",
    );
  } finally {
    wired.session?.conn.close(0, "done");
    await stage.stop();
  }
});

Deno.test("e2e sessions: packets for a session the connector does not have close the channel as session_gone", async () => {
  const stage = await startStage();
  const { trio } = stage;
  const port = portOf(trio.relayAddress);
  try {
    const peer = await dialPeer({ relayPort: port, tls: trio.pki.tls("agent-2") });
    const path = await openChannel(peer, port, "vault");
    // A 1-RTT-sized packet that is no Initial: what an agent sends after the connector's end
    // of its session is gone (ended there, e.g. by its idle timeout).
    const packet = new Uint8Array(1300).map((_, i) => (i * 13) & 0xff);
    writeChannelHeader(packet, ChannelPacketType.DATA, path.channel);
    peer.conn.socket.send(packet, path.target);
    const closed = await peer.next(isType("channel_closed"));
    assert.equal(closed.channel, path.channel);
    assert.equal(closed.reason, SESSION_GONE);
    const samples = await scrape(String(trio.connector.ready.metrics));
    assert.equal(metric(samples, 'ztna_connector_session_refusals_total{reason="not_initial"}'), 1);
    await agentStillServes(trio);
  } finally {
    await stage.stop();
  }
});
