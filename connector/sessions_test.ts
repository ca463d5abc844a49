import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { type ControlMessage, SESSION_GONE } from "../shared/protocol/control.ts";
import { ChannelPacketType, writeChannelHeader } from "../shared/protocol/channel_packet.ts";
import type { QuicConnection, TlsMaterial } from "../shared/quic/mod.ts";
import { type UdpSocket, udpTarget } from "../shared/quic/udp_socket.ts";
import type { RelaySession } from "../shared/relay_link.ts";
import { createLogger } from "../shared/log.ts";
import { createConnectorMetrics } from "./metrics.ts";
import { createConnectorSessions } from "./sessions.ts";

/** A relay link that records what the table sends it; no socket behind it. */
function fakeRelay(): RelaySession & { sent: ControlMessage[] } {
  const sent: ControlMessage[] = [];
  return {
    relay: "127.0.0.1:4433",
    conn: {} as QuicConnection,
    socket: {} as UdpSocket,
    target: udpTarget("127.0.0.1", 4433),
    send(message) {
      sent.push(message);
      return true;
    },
    moveOn() {},
    sent,
  };
}

function packet(type: number, channel: number, bodyBytes: number): Uint8Array {
  const bytes = new Uint8Array(5 + bodyBytes).map((_, i) => (i * 7) & 0xff);
  writeChannelHeader(bytes, type as 1, channel);
  return bytes;
}

function table() {
  const registry = new Registry();
  const metrics = createConnectorMetrics(registry);
  const sessions = createConnectorSessions({
    // No session may start in these tests: material that could not make a TLS context.
    tls: () => ({}) as TlsMaterial,
    idleTimeoutMs: 30_000,
    sessionsPerAgent: 4,
    handshakeTimeoutMs: 10_000,
    handlers: {
      onUp() {},
      onMessage() {},
      onDatagram() {},
      onStreamReadable() {},
      onStreamWritable() {},
      onDown() {},
    },
    onGrantChanged() {},
    logger: createLogger("connector", { level: "error" }),
    metrics,
  });
  const count = async (name: string, label: string) => {
    const text = await registry.metrics();
    const line = text.split("\n").find((l) => l.startsWith(`${name}{${label}}`));
    return line === undefined ? 0 : Number(line.split(" ").pop());
  };
  return { sessions, count };
}

const SESSION = "0123456789abcdef0123456789abcdef";

Deno.test("connector sessions: hostile channel traffic is dropped and counted, never starts a session", async () => {
  const { sessions, count } = table();
  const relay = fakeRelay();
  const announce = () =>
    sessions.announce(relay, {
      type: "channel",
      channel: 7,
      agent: "agent-1",
      session: SESSION,
      services: ["db"],
    });
  announce();
  assert.deepEqual(relay.sent, [{ type: "channel_ready", channel: 7 }]);

  const packets = "ztna_connector_channel_packets_total";
  sessions.packet(relay, new Uint8Array([1, 0, 0]));
  assert.equal(await count(packets, 'outcome="malformed"'), 1, "shorter than a header");
  sessions.packet(relay, packet(ChannelPacketType.DATA, 8, 1200));
  assert.equal(await count(packets, 'outcome="unknown_channel"'), 1, "a channel never announced");
  sessions.packet(relay, packet(9, 7, 10));
  assert.equal(await count(packets, 'outcome="malformed"'), 2, "an unknown type");
  // A DATA packet that is no QUIC Initial on a channel without a session (too short, or
  // garbage of Initial size): counted, and the channel is closed as "session gone", so an
  // agent whose session ended here stops sending into it.
  const refusals = "ztna_connector_session_refusals_total";
  for (const [i, size] of [100, 1300].entries()) {
    sessions.packet(relay, packet(ChannelPacketType.DATA, 7, size));
    assert.equal(await count(refusals, 'reason="not_initial"'), i + 1);
    assert.deepEqual(relay.sent.at(-1), {
      type: "channel_closed",
      channel: 7,
      reason: SESSION_GONE,
    });
    sessions.packet(relay, packet(ChannelPacketType.DATA, 7, size));
    assert.equal(await count(refusals, 'reason="not_initial"'), i + 1, "told once");
    announce();
  }
  // A PONG for a channel whose session never started costs nothing.
  sessions.packet(relay, packet(ChannelPacketType.PONG, 7, 8));
  assert.equal(sessions.count(), 0);

  // Another relay's channel 7 is not this one.
  sessions.packet(fakeRelay(), packet(ChannelPacketType.DATA, 7, 1300));
  // (Two more above: the packets after each "session gone".)
  assert.equal(await count(packets, 'outcome="unknown_channel"'), 4);

  // Closed, or its relay gone: the id means nothing any more.
  sessions.closed(relay, 7);
  sessions.packet(relay, packet(ChannelPacketType.DATA, 7, 1300));
  assert.equal(await count(packets, 'outcome="unknown_channel"'), 5);
  sessions.announce(relay, {
    type: "channel",
    channel: 9,
    agent: "agent-2",
    session: SESSION,
    services: [],
  });
  sessions.relayDown(relay);
  sessions.packet(relay, packet(ChannelPacketType.DATA, 9, 1300));
  assert.equal(await count(packets, 'outcome="unknown_channel"'), 6);
});
