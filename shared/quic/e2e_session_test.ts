import assert from "node:assert/strict";
import { createCa, createClientCertificate } from "../identity/dev_ca.ts";
import {
  ChannelPacketType,
  isChannelTraffic,
  parseChannelPacket,
  readChannelId,
  writeChannelHeader,
} from "../protocol/channel_packet.ts";
import { waitFor } from "../../test/_support/wait.ts";
import {
  acceptE2eSession,
  type E2eSession,
  openE2eSession,
  type SessionPath,
} from "./e2e_session.ts";
import type { TlsMaterial } from "./tls_config.ts";
import { openUdpSocket, type UdpSocket, udpTarget } from "./udp_socket.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A stand-in relay for one channel: agent side id `agentId`, connector side `connectorId`,
 * ids rewritten, pings answered, and every forwarded body kept (to look for plaintext).
 */
function startForwarder(agentId: number, connectorId: number) {
  const ends: { agent?: Deno.NetAddr; connector?: Deno.NetAddr } = {};
  const seen: Uint8Array[] = [];
  let up = true;
  const socket: UdpSocket = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    onPacket(packet, from) {
      if (!up || !isChannelTraffic(packet)) return;
      const parsed = parseChannelPacket(packet);
      if (parsed === null) return;
      const fromAgent = parsed.channel === agentId;
      if (fromAgent) ends.agent = { ...from };
      else if (parsed.channel === connectorId) ends.connector = { ...from };
      else return;
      if (parsed.type === ChannelPacketType.PING) {
        const pong = packet.slice();
        pong[0] = ChannelPacketType.PONG;
        socket.send(pong, from);
        return;
      }
      const to = fromAgent ? ends.connector : ends.agent;
      if (to === undefined) return;
      const out = packet.slice();
      writeChannelHeader(out, ChannelPacketType.DATA, fromAgent ? connectorId : agentId);
      seen.push(parsed.body.slice());
      socket.send(out, to);
    },
  });
  return {
    socket,
    seen,
    stop: () => void (up = false),
    /** Tells the forwarder where the connector is before it has sent anything. */
    connectorAt: (addr: Deno.NetAddr) => void (ends.connector = addr),
  };
}

async function certificates(): Promise<
  { agent: TlsMaterial; connector: TlsMaterial; impostor: TlsMaterial }
> {
  const ca = await createCa();
  const material = async (name: string): Promise<TlsMaterial> => {
    const pair = await createClientCertificate(ca, name);
    return {
      cert: encoder.encode(pair.cert),
      key: encoder.encode(pair.key),
      ca: encoder.encode(ca.cert),
    };
  };
  return {
    agent: await material("agent-1"),
    connector: await material("connector-1"),
    impostor: await material("agent-2"),
  };
}

/** The agent's and connector's sockets, each delivering channel packets to a session. */
function endpoints() {
  const sessions: { agent?: E2eSession; connector?: E2eSession } = {};
  const paths = new Map<string, SessionPath>();
  const route =
    (side: "agent" | "connector", onFirst: (packet: Uint8Array, path: SessionPath) => void) =>
    (packet: Uint8Array, from: Deno.NetAddr) => {
      const parsed = parseChannelPacket(packet);
      if (parsed === null) return;
      const path = paths.get(`${side} ${from.port} ${readChannelId(packet)}`);
      if (path === undefined) return;
      const session = sessions[side];
      if (parsed.type === ChannelPacketType.PONG) session?.pong(packet, path);
      else if (parsed.type === ChannelPacketType.DATA) {
        if (session === undefined) onFirst(packet, path);
        else session.receive(packet, path);
      }
    };
  return { sessions, paths, route };
}

Deno.test("e2e session: mutual identity, data both ways, opaque to the relay, moves relays", async () => {
  const tls = await certificates();
  const relayA = startForwarder(11, 22);
  const relayB = startForwarder(33, 44);
  const { sessions, paths, route } = endpoints();
  const accept = (packet: Uint8Array, path: SessionPath) => {
    sessions.connector = acceptE2eSession(packet, {
      tls: tls.connector,
      expectedPeer: "agent-1",
      path,
      handlers: {
        onDatagram: (d) => void sessions.connector!.conn.sendDatagram(d.slice().reverse()),
      },
    }) ?? undefined;
  };
  const agentSocket = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    onPacket: route("agent", () => {}),
  });
  const connectorSocket = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    onPacket: route("connector", accept),
  });
  const path = (
    side: "agent" | "connector",
    socket: UdpSocket,
    relay: UdpSocket,
    channel: number,
  ) => {
    const p: SessionPath = {
      label: `relay ${relay.addr.port} channel ${channel}`,
      socket,
      target: udpTarget("127.0.0.1", relay.addr.port),
      channel,
    };
    paths.set(`${side} ${relay.addr.port} ${channel}`, p);
    return p;
  };
  const agentA = path("agent", agentSocket, relayA.socket, 11);
  path("connector", connectorSocket, relayA.socket, 22);
  const agentB = path("agent", agentSocket, relayB.socket, 33);
  path("connector", connectorSocket, relayB.socket, 44);
  relayA.connectorAt({ ...connectorSocket.addr, hostname: "127.0.0.1" });
  relayB.connectorAt({ ...connectorSocket.addr, hostname: "127.0.0.1" });

  const echoes: string[] = [];
  let dead = 0;
  const switches: string[] = [];
  let established = false;
  sessions.agent = openE2eSession({
    tls: tls.agent,
    expectedPeer: "connector-1",
    path: agentA,
    handlers: {
      onEstablished: () => void (established = true),
      onDatagram: (d) => void echoes.push(decoder.decode(d)),
    },
    onPathDead: () => void dead++,
    onPathSwitch: (_from, to, cause) => void switches.push(`${to.channel} ${cause}`),
  });
  try {
    await waitFor("handshake", () => established, 5000);
    sessions.agent.conn.sendDatagram(encoder.encode("secret-one"));
    await waitFor("echo over A", () => echoes.includes("eno-terces"), 5000);

    // Move to relay B; the connector follows once an authentic packet arrives there.
    sessions.agent.setPath(agentB, "draining");
    relayA.stop();
    sessions.agent.conn.sendDatagram(encoder.encode("secret-two"));
    await waitFor("echo over B", () => echoes.includes("owt-terces"), 5000);
    assert.deepEqual(switches, ["33 draining"]);
    assert.equal(sessions.connector!.path?.channel, 44);

    // Relay B dies: the path is reported dead within PATH_DEAD_MS and a ping interval.
    relayB.stop();
    await waitFor("dead path", () => dead === 1, 5000);

    for (const relay of [relayA, relayB]) {
      for (const body of relay.seen) assert.ok(!decoder.decode(body).includes("secret"));
      assert.ok(relay.seen.length > 0);
    }
  } finally {
    sessions.agent.conn.close(0, "done");
    sessions.connector?.conn.close(0, "done");
    await new Promise((r) => setTimeout(r, 50));
    for (const socket of [agentSocket, connectorSocket, relayA.socket, relayB.socket]) {
      socket.close();
    }
  }
});

Deno.test("e2e session: a peer presenting another identity is refused on both sides", async () => {
  const tls = await certificates();
  const relay = startForwarder(1, 2);
  const { sessions, paths, route } = endpoints();
  const refusals: (string | null)[] = [];
  const accept = (packet: Uint8Array, path: SessionPath) => {
    sessions.connector = acceptE2eSession(packet, {
      tls: tls.connector,
      expectedPeer: "agent-1",
      path,
      handlers: {},
      onIdentityMismatch: (presented) => void refusals.push(presented),
    }) ?? undefined;
  };
  const agentSocket = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    onPacket: route("agent", () => {}),
  });
  const connectorSocket = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    onPacket: route("connector", accept),
  });
  const target = udpTarget("127.0.0.1", relay.socket.addr.port);
  const agentPath: SessionPath = { label: "a", socket: agentSocket, target, channel: 1 };
  paths.set(`agent ${relay.socket.addr.port} 1`, agentPath);
  paths.set(`connector ${relay.socket.addr.port} 2`, {
    label: "c",
    socket: connectorSocket,
    target,
    channel: 2,
  });
  relay.connectorAt({ ...connectorSocket.addr, hostname: "127.0.0.1" });
  let closed = false;
  let established = false;
  sessions.agent = openE2eSession({
    tls: tls.impostor,
    expectedPeer: "connector-1",
    path: agentPath,
    handlers: {
      onEstablished: () => void (established = true),
      onClosed: () => void (closed = true),
    },
  });
  try {
    await waitFor("refusal", () => closed, 5000);
    assert.deepEqual(refusals, ["agent-2"]);
    assert.equal(established, true); // TLS passed (same CA); the identity check closed it
  } finally {
    await new Promise((r) => setTimeout(r, 50));
    for (const socket of [agentSocket, connectorSocket, relay.socket]) socket.close();
  }
});
