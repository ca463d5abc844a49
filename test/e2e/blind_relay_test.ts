/**
 * The relay's channels (issue 14) against real relay processes: an agent and a connector
 * (test peers speaking the control protocol) run an end-to-end QUIC session through a
 * channel; what the relay forwards never shows the plaintext; a packet from the wrong
 * connection is dropped and counted; a policy reload closes the channel; and the session
 * moves to a second relay, without a new handshake, when the first one is killed.
 */
import assert from "node:assert/strict";
import type { ControlMessage } from "../../shared/protocol/control.ts";
import {
  ChannelPacketType,
  parseChannelPacket,
  readChannelId,
} from "../../shared/protocol/channel_packet.ts";
import {
  acceptE2eSession,
  type E2eSession,
  openE2eSession,
  type SessionPath,
} from "../../shared/quic/e2e_session.ts";
import { udpTarget } from "../../shared/quic/udp_socket.ts";
import { readTlsFiles } from "../../shared/tls_files.ts";
import { closePeers, dialPeer, type Peer } from "../_support/attack_client.ts";
import { metric, portOf, scrape, startEchoService } from "../_support/harness.ts";
import { startTrio, type Trio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const SECRET = "plaintext-that-the-relay-must-not-see";
const SESSION = "0123456789abcdef0123456789abcdef";
const INSTANCE = "c0ffee00c0ffee00";

const isType =
  <T extends ControlMessage["type"]>(type: T) =>
  (m: ControlMessage): m is ControlMessage & { type: T } => m.type === type;

/** Two relays, the trio's own connector and agent, and a service only the test peers use. */
async function startStage(): Promise<Trio> {
  const echo = await startEchoService();
  return await startTrio({
    relays: 2,
    backends: { echo: `udp://127.0.0.1:${echo.port}` },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    agents: ["agent-1", "agent-2"],
    extraClients: ["connector-2"],
    relay: {
      services: {
        echo: { connectors: ["connector-1"], agents: ["agent-1", "agent-2"] },
        vault: { connectors: ["connector-2"], agents: ["agent-1"] },
      },
    },
    processes: [echo.proc],
  });
}

/**
 * One relay as seen by the test's connector and agent: their connections, the channel
 * packets each received (copies: what the relay forwarded), and the paths of the channel.
 */
interface Hop {
  port: number;
  connector: Peer;
  agent: Peer;
  forwarded: Uint8Array[];
  agentPath?: SessionPath;
  connectorPath?: SessionPath;
}

Deno.test("blind relay: an end-to-end session through channels, opaque, bound, revocable, and moved when its relay dies", async () => {
  const trio = await startStage();
  const tls = {
    agent: readTlsFiles(trio.pki.tls("agent-1")),
    connector: readTlsFiles(trio.pki.tls("connector-2")),
  };
  const sessions: { agent?: E2eSession; connector?: E2eSession } = {};
  const echoed: string[] = [];
  const hops: Hop[] = [];
  try {
    // The connector's end: answers every datagram with its reverse, streams with an echo.
    const onConnectorPacket = (hop: () => Hop) => (packet: Uint8Array) => {
      const h = hop();
      h.forwarded.push(packet.slice());
      const parsed = parseChannelPacket(packet);
      if (parsed === null || h.connectorPath === undefined) return;
      if (readChannelId(packet) !== h.connectorPath.channel) return;
      if (parsed.type === ChannelPacketType.PONG) {
        return sessions.connector?.pong(packet, h.connectorPath);
      }
      if (sessions.connector !== undefined) {
        sessions.connector.receive(packet, h.connectorPath);
        return;
      }
      sessions.connector = acceptE2eSession(packet, {
        tls: tls.connector,
        expectedPeer: "agent-1",
        path: h.connectorPath,
        handlers: {
          onDatagram: (d) => void sessions.connector!.conn.sendDatagram(d.slice().reverse()),
          onStreamReadable(id) {
            const buffer = new Uint8Array(65536);
            for (;;) {
              const read = sessions.connector!.conn.streamRead(id, buffer);
              if (read === null) return;
              sessions.connector!.conn.streamWrite(id, buffer.slice(0, read.bytes), read.fin);
              if (read.fin) return;
            }
          },
        },
      }) ?? undefined;
    };
    const onAgentPacket = (hop: () => Hop) => (packet: Uint8Array) => {
      const h = hop();
      h.forwarded.push(packet.slice());
      const parsed = parseChannelPacket(packet);
      if (parsed === null || h.agentPath === undefined || sessions.agent === undefined) return;
      if (parsed.type === ChannelPacketType.PONG) sessions.agent.pong(packet, h.agentPath);
      else sessions.agent.receive(packet, h.agentPath);
    };
    for (const address of trio.relayAddresses) {
      const port = portOf(address);
      const hop = {} as Hop;
      hop.port = port;
      hop.forwarded = [];
      hop.connector = await dialPeer({
        relayPort: port,
        tls: trio.pki.tls("connector-2"),
        role: "connector",
        instance: INSTANCE,
        onChannelPacket: onConnectorPacket(() => hop),
      });
      hop.connector.send({ type: "register", services: [{ name: "vault", protocol: "tcp" }] });
      await hop.connector.next(isType("registered"));
      hop.agent = await dialPeer({
        relayPort: port,
        tls: trio.pki.tls("agent-1"),
        onChannelPacket: onAgentPacket(() => hop),
      });
      hops.push(hop);
    }

    /** Opens (or re-opens) the session's channel through `hop`; returns the agent's path. */
    const openChannel = async (hop: Hop, request: number, instance?: string) => {
      hop.agent.send({
        type: "session_open",
        id: request,
        service: "vault",
        session: SESSION,
        ...(instance === undefined ? {} : { connector: instance }),
      });
      const announced = await hop.connector.next(isType("channel"));
      assert.equal(announced.agent, "agent-1");
      assert.deepEqual(announced.services, ["vault"]);
      hop.connectorPath = {
        label: `relay ${hop.port}`,
        socket: hop.connector.conn.socket,
        target: udpTarget("127.0.0.1", hop.port),
        channel: announced.channel,
      };
      hop.connector.send({ type: "channel_ready", channel: announced.channel });
      const opened = await hop.agent.next(
        (m): m is ControlMessage & { type: "session_opened" } =>
          m.type === "session_opened" && m.id === request,
      );
      assert.equal(opened.connector, "connector-2");
      assert.equal(opened.instance, INSTANCE);
      hop.agentPath = {
        label: `relay ${hop.port}`,
        socket: hop.agent.conn.socket,
        target: udpTarget("127.0.0.1", hop.port),
        channel: opened.channel,
      };
      return hop.agentPath;
    };

    const [first, second] = hops;
    let established = false;
    let switches = 0;
    sessions.agent = openE2eSession({
      tls: tls.agent,
      expectedPeer: "connector-2",
      path: await openChannel(first, 1),
      handlers: {
        onEstablished: () => void (established = true),
        onDatagram: (d) => void echoed.push(decoder.decode(d)),
        onStreamReadable(id) {
          const buffer = new Uint8Array(65536);
          const read = sessions.agent!.conn.streamRead(id, buffer);
          if (read !== null) echoed.push(decoder.decode(buffer.subarray(0, read.bytes)));
        },
      },
      onPathDead: () =>
        void openChannel(second, 2, INSTANCE).then((path) => sessions.agent!.setPath(path, "dead")),
      onPathSwitch: () => void switches++,
    });
    await waitFor("the end-to-end handshake", () => established, 10_000);
    const agentConn = sessions.agent.conn;
    agentConn.sendDatagram(encoder.encode(`udp ${SECRET}`));
    agentConn.streamWrite(0, encoder.encode(`tcp ${SECRET}`));
    await waitFor(
      "both echoes",
      () =>
        echoed.includes(`udp ${SECRET}`.split("").reverse().join("")) &&
        echoed.includes(`tcp ${SECRET}`),
      10_000,
    );

    // Blind: no forwarded packet shows the plaintext.
    for (const packet of first.forwarded) assert.ok(!decoder.decode(packet).includes(SECRET));
    const relayMetrics = String(trio.relays[0].ready.metrics);
    const before = await scrape(relayMetrics);
    assert.ok(metric(before, 'ztna_relay_channel_packets_total{direction="to_connector"}') > 0);
    assert.equal(metric(before, "ztna_relay_channels_active"), 1);

    // Bound: the agent's channel id sent from the connector's connection goes nowhere.
    const spoof = new Uint8Array(1200);
    spoof.set([ChannelPacketType.DATA, ...new Uint8Array(4)]);
    new DataView(spoof.buffer).setUint32(1, first.agentPath!.channel);
    first.connector.conn.socket.send(spoof, udpTarget("127.0.0.1", first.port));
    await waitFor(
      "the spoof counted",
      async () =>
        metric(
          await scrape(relayMetrics),
          'ztna_relay_channel_drops_total{reason="wrong_source"}',
        ) >= 1,
    );

    // Moved: the first relay dies; the path goes dead, the channel is re-opened through the
    // second relay to the same connector instance, and the same session carries on.
    trio.relays[0].signal("SIGKILL");
    const killedAt = Date.now();
    await waitFor(
      "the move to the second relay",
      () => sessions.agent!.path === second.agentPath,
      10_000,
    );
    const moveMs = Date.now() - killedAt;
    console.log(`session moved ${moveMs} ms after SIGKILL of its relay`);
    agentConn.sendDatagram(encoder.encode("after the move"));
    await waitFor(
      "an echo through the second relay",
      () => echoed.includes("evom eht retfa"),
      10_000,
    );
    assert.equal(sessions.agent.conn, agentConn);
    assert.equal(switches, 1);
    for (const packet of second.forwarded) assert.ok(!decoder.decode(packet).includes(SECRET));

    // Revocable: a reload that takes vault from agent-1 closes the channel at both ends.
    const relay = trio.relays[1];
    const config = JSON.parse(await Deno.readTextFile(relay.configPath!));
    config.services.vault.agents = ["agent-2"];
    await Deno.writeTextFile(relay.configPath!, JSON.stringify(config));
    relay.signal("SIGHUP");
    await second.agent.next(isType("channel_closed"), 5000);
    await second.connector.next(isType("channel_closed"), 5000);
    await waitFor(
      "the channel gone",
      async () =>
        metric(await scrape(String(relay.ready.metrics)), "ztna_relay_channels_active") === 0,
    );
  } finally {
    sessions.agent?.conn.close(0, "done");
    sessions.connector?.conn.close(0, "done");
    await new Promise((r) => setTimeout(r, 100));
    await closePeers();
    await trio.stop();
  }
});
