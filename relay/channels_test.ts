import assert from "node:assert/strict";
import {
  CHANNEL_HEADER_BYTES,
  ChannelPacketType,
  readChannelId,
  writeChannelHeader,
} from "../shared/protocol/channel_packet.ts";
import type { QuicConnection } from "../shared/quic/mod.ts";
import type { UdpSocket, UdpTarget } from "../shared/quic/udp_socket.ts";
import { type ChannelPeer, createChannels } from "./channels.ts";

/** A socket that records what would be sent. */
function recordingSocket() {
  const sent: { bytes: Uint8Array; to: UdpTarget }[] = [];
  const buffer = new Uint8Array(2048);
  const socket = {
    sendBuffer: () => buffer,
    commit: (length: number, to: UdpTarget) =>
      void sent.push({ bytes: buffer.slice(0, length), to }),
  } as unknown as UdpSocket;
  return { socket, sent };
}

const peer = (identity: string, port: number): ChannelPeer => ({
  identity,
  conn: { peer: { host: "127.0.0.1", port } } as unknown as QuicConnection,
});
const from = (port: number): Deno.NetAddr => ({ transport: "udp", hostname: "127.0.0.1", port });

function packet(type: number, channel: number, bodyLength: number): Uint8Array {
  const bytes = new Uint8Array(CHANNEL_HEADER_BYTES + bodyLength).fill(0xaa);
  writeChannelHeader(bytes, type as 1, channel);
  return bytes;
}

function stage(packetsPerSecondPerIdentity = 1000) {
  const { socket, sent } = recordingSocket();
  const channels = createChannels<ChannelPeer>({
    socket: () => socket,
    packetsPerSecondPerIdentity,
    maxPacketBytes: 2048,
  });
  const agent = peer("agent-1", 1001);
  const connector = peer("connector-1", 2002);
  const channel = channels.open(agent, connector, "s".repeat(32), ["echo"]);
  return { channels, sent, agent, connector, channel };
}

Deno.test("channels: a data packet is forwarded with the far side's id, to the far side only", () => {
  const { channels, sent, channel } = stage();
  assert.notEqual(channel.agent.id, channel.connector.id);
  channels.forward(packet(ChannelPacketType.DATA, channel.agent.id, 100), from(1001));
  assert.equal(sent.length, 1);
  assert.equal(readChannelId(sent[0].bytes), channel.connector.id);
  assert.equal(sent[0].to.port, 2002);
  assert.deepEqual(sent[0].bytes.subarray(CHANNEL_HEADER_BYTES), new Uint8Array(100).fill(0xaa));
  channels.forward(packet(ChannelPacketType.DATA, channel.connector.id, 10), from(2002));
  assert.equal(sent[1].to.port, 1001);
  assert.equal(readChannelId(sent[1].bytes), channel.agent.id);
  assert.deepEqual(channels.counters.packets, { to_connector: 1, to_agent: 1 });
  assert.deepEqual(channels.counters.bytes, { to_connector: 100, to_agent: 10 });
  assert.equal(channel.toConnector.packets, 1);
});

Deno.test("channels: pings are answered to the sender with the same nonce", () => {
  const { channels, sent, channel } = stage();
  const ping = packet(ChannelPacketType.PING, channel.agent.id, 8);
  ping.set([1, 2, 3, 4, 5, 6, 7, 8], CHANNEL_HEADER_BYTES);
  channels.forward(ping, from(1001));
  assert.equal(sent.length, 1);
  assert.equal(sent[0].bytes[0], ChannelPacketType.PONG);
  assert.equal(sent[0].to.port, 1001);
  assert.deepEqual([...sent[0].bytes.subarray(CHANNEL_HEADER_BYTES)], [1, 2, 3, 4, 5, 6, 7, 8]);
});

Deno.test("channels: hostile packets are dropped and counted, never forwarded", () => {
  const { channels, sent, channel } = stage();
  // Short, unknown type, empty data, bad keepalive, unknown id, from another address, too big.
  channels.forward(new Uint8Array([1, 0, 0]), from(1001));
  channels.forward(packet(0x3f, channel.agent.id, 10), from(1001));
  channels.forward(packet(ChannelPacketType.DATA, channel.agent.id, 0), from(1001));
  channels.forward(packet(ChannelPacketType.PING, channel.agent.id, 3), from(1001));
  channels.forward(packet(ChannelPacketType.DATA, (channel.agent.id ^ 1) >>> 0, 10), from(1001));
  channels.forward(packet(ChannelPacketType.DATA, channel.agent.id, 10), from(1002));
  channels.forward(packet(ChannelPacketType.DATA, channel.connector.id, 10), from(1001));
  channels.forward(packet(ChannelPacketType.DATA, channel.agent.id, 2048), from(1001));
  assert.equal(sent.length, 0);
  assert.deepEqual(channels.counters.drops, {
    malformed: 4,
    unknown_channel: 1,
    wrong_source: 2,
    rate_limited: 0,
    too_large: 1,
  });
});

Deno.test("channels: one identity's packets beyond its budget are dropped", () => {
  const { channels, sent, channel } = stage(10);
  for (let i = 0; i < 50; i++) {
    channels.forward(packet(ChannelPacketType.DATA, channel.agent.id, 10), from(1001));
  }
  assert.ok(sent.length <= 11, `${sent.length} forwarded`);
  assert.ok(channels.counters.drops.rate_limited >= 39);
});

Deno.test("channels: closing removes both ids; lookups are per side", () => {
  const { channels, sent, channel, agent, connector } = stage();
  assert.equal(channels.byId(agent, channel.agent.id), channel);
  assert.equal(channels.byId(connector, channel.agent.id), undefined);
  assert.equal(channels.find(agent, connector, "s".repeat(32)), channel);
  assert.equal(channels.size, 1);
  assert.equal(channels.close(channel), true);
  assert.equal(channels.close(channel), false);
  assert.equal(channels.size, 0);
  assert.deepEqual(channels.of(agent), []);
  channels.forward(packet(ChannelPacketType.DATA, channel.agent.id, 10), from(1001));
  assert.equal(sent.length, 0);
  assert.equal(channels.counters.drops.unknown_channel, 1);
});
