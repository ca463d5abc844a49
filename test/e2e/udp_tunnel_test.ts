import assert from "node:assert/strict";
import { metric, scrape, udpClient } from "../_support/harness.ts";
import { startTunnel } from "../_support/trio.ts";

Deno.test("udp tunnel: 10,000 datagrams of 1 B to 8 KiB echo back intact", async () => {
  await using tunnel = await startTunnel();
  const client = udpClient();
  try {
    const total = 10_000;
    const window = 32;
    let seed = 7;
    const random = () => (seed = (seed * 48271) % 0x7fffffff) / 0x7fffffff;
    // Each payload starts with its sequence number; the rest is a pattern derived from it.
    const sizes = Array.from({ length: total }, (_, i) => {
      if (i % 100 === 0) return 8192;
      if (i % 10 === 0) return 1 + Math.floor(random() * 8192);
      return 4 + Math.floor(random() * 1400);
    });
    sizes[1] = 1;
    sizes[2] = 2;
    const payload = (i: number) => {
      const size = sizes[i];
      const data = new Uint8Array(size);
      for (let j = 0; j < size; j++) data[j] = (i * 31 + j * 7) & 0xff;
      if (size >= 4) new DataView(data.buffer).setUint32(0, i);
      return data;
    };
    const expectedByContent = new Map<string, number>();
    const outstanding = new Set<number>();
    let verified = 0;
    let corrupted = 0;
    let next = 0;
    const started = performance.now();
    const keyOf = (d: Uint8Array) =>
      d.length < 4
        ? `tiny:${d.length}:${d[0]}`
        : `seq:${new DataView(d.buffer, d.byteOffset).getUint32(0)}`;
    while (next < total || outstanding.size > 0) {
      while (next < total && outstanding.size < window) {
        const data = payload(next);
        expectedByContent.set(keyOf(data), next);
        outstanding.add(next);
        await client.send(data, tunnel.agentPort);
        next++;
      }
      const reply = await client.receive(2000);
      if (reply === null) break; // what is still outstanding is counted as lost below
      const index = expectedByContent.get(keyOf(reply));
      if (index === undefined || !outstanding.has(index)) {
        corrupted++;
        continue;
      }
      const expected = payload(index);
      if (reply.length !== expected.length || !reply.every((b, k) => b === expected[k])) {
        corrupted++;
      } else {
        verified++;
      }
      outstanding.delete(index);
    }
    const lost = total - verified - corrupted;
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `udp tunnel: sent ${total}, verified ${verified}, corrupted ${corrupted}, lost ${lost} (${
        (100 * lost / total).toFixed(2)
      }%) in ${seconds.toFixed(1)} s`,
    );
    assert.equal(corrupted, 0, "no payload may be altered");
    assert.equal(lost, 0, "loopback at a paced rate loses nothing");
    // The relay forwarded the end-to-end session's packets through one channel, blind; the
    // flow itself exists only at the agent and the connector.
    const relayMetrics = await scrape(String(tunnel.relay.ready.metrics));
    assert.ok(
      metric(relayMetrics, 'ztna_relay_datagrams_relayed_total{direction="to_connector"}') > 0,
    );
    assert.equal(metric(relayMetrics, "ztna_relay_channels_active"), 1);
    assert.equal(metric(relayMetrics, 'ztna_relay_service_connectors{service="echo"}'), 1);
    const agentMetrics = await scrape(String(tunnel.agent.ready.metrics));
    assert.equal(metric(agentMetrics, 'ztna_agent_datagrams_total{direction="to_relay"}'), total);
    assert.equal(metric(agentMetrics, 'ztna_agent_flows_active{protocol="udp"}'), 1);
    assert.equal(metric(agentMetrics, "ztna_agent_sessions_active"), 1);
    const connectorMetrics = await scrape(String(tunnel.connector.ready.metrics));
    assert.equal(metric(connectorMetrics, "ztna_connector_sessions_active"), 1);
  } finally {
    client.close();
  }
});
