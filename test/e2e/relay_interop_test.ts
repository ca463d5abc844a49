/**
 * The relay against peers that behave as RFC-conforming stacks other than ours may: no
 * DATAGRAM support, a NAT that rebinds the peer's port, a large control-frame prefix before
 * `hello` (issue 12: interoperability and finding 6).
 */
import assert from "node:assert/strict";
import type { ControlMessage } from "../../shared/protocol/control.ts";
import { tokenHashText } from "../../shared/config/tokens.ts";
import { createFlowDatagrams } from "../../shared/flow_datagrams.ts";
import { closedWithin, closePeers, dialPeer, startAttacker } from "../_support/attack_client.ts";
import {
  type ComponentProcess,
  createPki,
  metric,
  portOf,
  scrape,
  startComponent,
} from "../_support/harness.ts";
import { startTunnel } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";
import { procRss } from "../_support/fault_util.ts";

const enc = new TextEncoder();
/** Rebindings in a row (quiche follows up to MAX_PATHS - 1 per connection). */
const REBINDINGS = 12;

Deno.test("interop: UDP needs negotiated DATAGRAM frames, and says so", async () => {
  await using tunnel = await startTunnel({ allowedAgents: ["agent-1", "agent-2"] });
  try {
    const relayPort = portOf(tunnel.relayAddress);
    const agent = await dialPeer({
      relayPort,
      tls: tunnel.pki.tls("agent-2"),
      datagrams: false,
    });
    agent.send({ type: "open", id: 1, service: "echo", protocol: "udp" });
    const answer = await agent.next((m): m is ControlMessage & { type: "refused" | "opened" } =>
      m.type === "refused" || m.type === "opened"
    );
    assert.deepEqual(answer, {
      type: "refused",
      id: 1,
      reason: "unsupported",
      message: "peer did not negotiate QUIC DATAGRAM frames",
    });
    const connector = await dialPeer({
      relayPort,
      tls: tunnel.pki.tls("connector-1"),
      role: "connector",
      datagrams: false,
    });
    connector.send({ type: "register", services: [{ name: "echo", protocol: "udp" }] });
    const registered = await connector.next((m): m is ControlMessage & { type: "registered" } =>
      m.type === "registered"
    );
    assert.deepEqual(registered.rejected, [{ name: "echo", reason: "unsupported" }]);
    assert.equal(agent.conn.closed, false, "a clear refusal, not a close");
  } finally {
    await closePeers();
  }
});

Deno.test("interop: a peer that takes only 1200-byte packets gets every fragment of a big reply", async () => {
  await using tunnel = await startTunnel({ allowedAgents: ["agent-1", "agent-2"] });
  try {
    const peer = await dialPeer({
      relayPort: portOf(tunnel.relayAddress),
      tls: tunnel.pki.tls("agent-2"),
      maxRecvUdpPayload: 1200,
    });
    // `max_datagram` here is what the relay can forward to the connector; the connector was
    // told this peer's smaller limit in its `open`, and fragments its replies by it.
    const { flow, maxDatagram } = await peer.openUdp("echo");
    const datagrams = createFlowDatagrams(peer.conn);
    datagrams.limitFlow(flow, maxDatagram);
    for (const size of [1100, 1300, 4000, 8000]) {
      const payload = new Uint8Array(size).map((_, i) => (i * 7 + size) & 0xff);
      const seen = peer.datagrams.length;
      assert.equal(datagrams.send(flow, payload), null);
      let echoed: Uint8Array | null = null;
      await waitFor(`the ${size}-byte echo reassembled`, () => {
        for (const frame of peer.datagrams.splice(seen)) {
          datagrams.receive(frame, (_flow, data) => echoed = data.slice());
        }
        return echoed !== null;
      });
      assert.deepEqual(echoed, payload);
    }
    const samples = await scrape(String(tunnel.relay.ready.metrics));
    assert.equal(metric(samples, 'ztna_relay_drops_total{reason="too_large"}'), 0);
  } finally {
    await closePeers();
  }
});

/** A UDP relay in front of the relay whose upstream port can be changed (a NAT rebinding). */
function startRebindingNat(relayPort: number) {
  const front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let client: Deno.NetAddr | null = null;
  let open = true;
  let upstream!: Deno.DatagramConn;
  const relay: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: relayPort };
  const pumpBack = async (socket: Deno.DatagramConn) => {
    try {
      for (;;) {
        const [data] = await socket.receive();
        if (client !== null && open) await front.send(data, client);
      }
    } catch {
      // Socket closed (rebound or stopped).
    }
  };
  const bindUpstream = () => {
    upstream = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    pumpBack(upstream);
  };
  bindUpstream();
  (async () => {
    try {
      for (;;) {
        const [data, from] = await front.receive();
        client = from as Deno.NetAddr;
        await upstream.send(data, relay).catch(() => {});
      }
    } catch {
      // Stopped.
    }
  })();
  return {
    port: (front.addr as Deno.NetAddr).port,
    /** New upstream port; packets to the old one are lost from now on. */
    rebind() {
      const old = upstream;
      bindUpstream();
      old.close();
      return (upstream.addr as Deno.NetAddr).port;
    },
    close() {
      open = false;
      front.close();
      upstream.close();
    },
  };
}

Deno.test("interop: a peer whose NAT rebinds keeps its connection and flow", async () => {
  await using tunnel = await startTunnel({ allowedAgents: ["agent-1", "agent-2"] });
  const nat = startRebindingNat(portOf(tunnel.relayAddress));
  try {
    const peer = await dialPeer({ relayPort: nat.port, tls: tunnel.pki.tls("agent-2") });
    const { flow } = await peer.openUdp("echo");
    const echoed = async (label: string) => {
      const before = peer.datagrams.length;
      // A few tries: the first packets after a rebinding may race the path validation.
      for (let i = 0; i < 20 && peer.datagrams.length === before; i++) {
        peer.sendOnFlow(flow, enc.encode(label));
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(peer.datagrams.length > before, `${label}: echoed`);
    };
    await echoed("before");
    for (let i = 1; i <= REBINDINGS; i++) {
      nat.rebind();
      await echoed(`after rebinding ${i}`);
      // Control traffic moved too: a ping is answered on the new path.
      peer.send({ type: "ping", seq: 100 + i });
      await peer.next((m): m is ControlMessage => m.type === "pong" && m.seq === 100 + i, 5000);
    }
    assert.equal(peer.conn.closed, false);
    const samples = await scrape(String(tunnel.relay.ready.metrics));
    assert.equal(metric(samples, 'ztna_relay_connections_accepted_total{role="agent"}'), 2);
  } finally {
    await closePeers();
    nat.close();
  }
});

Deno.test("finding 6: before hello a control frame may not claim more than 4 KiB", async () => {
  // Token mode: anybody can complete TLS, so this is what an outsider can make the relay hold.
  const pki = await createPki([]);
  const relay = await startComponent("relay", {
    listen: "127.0.0.1:0",
    metrics: "127.0.0.1:0",
    tls: pki.tls("relay"),
    auth: "token",
    tokens: { "agent-1": [tokenHashText("ztna-test-token-0123456789abcdef")] },
    limits: {
      preauth_connections_per_ip: 1000,
      preauth_connections: 1000,
      // The 300 sessions are dialled at once from one address.
      handshakes_per_second_per_ip: 1000,
      handshakes_per_second: 1000,
    },
  });
  const relayPort = portOf(relay.ready.quic);
  const relayMetrics = String(relay.ready.metrics);
  let attacker: ComponentProcess | undefined;
  try {
    const tls = { ca: pki.tls("relay").ca };
    // A 64 KiB claim is refused at its length prefix.
    const greedy = await dialPeer({ relayPort, tls, role: null });
    greedy.conn.streamWrite(0, new Uint8Array([0, 1, 0, 0]));
    const info = await closedWithin(greedy, 10_000);
    assert.equal(info && `${info.peer?.code}:${info.peer?.reason}`, "1:oversized_frame");

    // 300 connections each claiming 4000 bytes and sending 10. What the decoders hold is
    // buffer memory outside V8's heap, reported as external memory: before this fix each
    // connection could make the relay allocate a 64 KiB body (18.8 MiB for 300).
    const external = async () =>
      metric(await scrape(relayMetrics), "nodejs_external_memory_bytes") / (1 << 20);
    const externalBefore = await external();
    const rssBefore = procRss(relay.pid);
    attacker = await startAttacker({
      mode: "silent",
      relayPort,
      bindHost: "127.0.0.2",
      count: 300,
      tls,
      write: [0, 0, 0x0f, 0xa0, ...new Array(10).fill(0)],
      handshakeMs: 10_000,
      // In batches: 300 handshakes at once overflow a loaded machine's socket buffers.
      concurrency: 50,
    });
    assert.equal(attacker.ready.established, 300, "300 sessions held");
    await new Promise((r) => setTimeout(r, 500));
    const grown = await external() - externalBefore;
    const rss = (procRss(relay.pid) - rssBefore) / (1 << 20);
    console.log(
      `300 pre-hello sessions with a pending 4000-byte frame: relay external memory ` +
        `+${grown.toFixed(1)} MiB, RSS +${rss.toFixed(1)} MiB (QUIC and TLS state included)`,
    );
    assert.ok(grown < 6, `external memory grew ${grown.toFixed(1)} MiB`);
    const samples = await scrape(relayMetrics);
    assert.ok(
      metric(samples, 'ztna_relay_protocol_violations_total{reason="oversized_frame"}') >= 1,
    );
  } finally {
    await attacker?.stop();
    await closePeers();
    await relay.stop();
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
