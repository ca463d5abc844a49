import assert from "node:assert/strict";
import { type CloseInfo, connectQuic, type QuicConnection } from "../../shared/quic/mod.ts";
import { PROTOCOL_VERSION } from "../../shared/protocol/control.ts";
import { readTlsFiles } from "../../shared/tls_files.ts";
import { metric, portOf, scrape, udpClient } from "../_support/harness.ts";
import { startTunnel } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";

const enc = new TextEncoder();

/** Connects to the relay as `identity` and resolves once the handshake is done. */
async function dial(
  relayPort: number,
  tls: { cert: string; key: string; ca: string },
): Promise<{ conn: QuicConnection; closed: Promise<CloseInfo> }> {
  const conn = connectQuic({
    server: { host: "127.0.0.1", port: relayPort },
    serverName: "localhost",
    tls: readTlsFiles(tls),
  });
  const closed = new Promise<CloseInfo>((resolve) => {
    conn.setHandlers({ onClosed: resolve, onStreamReadable: () => {} });
  });
  await waitFor("handshake", () => conn.established || conn.closed);
  return { conn, closed };
}

function frame(body: Uint8Array, declared = body.length): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, declared);
  out.set(body, 4);
  return out;
}

Deno.test("relay: malformed control frames and random packets are rejected, counted, survived", async () => {
  const tunnel = await startTunnel();
  const client = udpClient();
  const relayPort = portOf(tunnel.relay.ready.quic);
  const relayMetrics = String(tunnel.relay.ready.metrics);
  const echo = async (label: string) => {
    await client.send(enc.encode(label), tunnel.agentPort);
    const reply = await client.receive(2000);
    assert.equal(reply && new TextDecoder().decode(reply), label, "the good flow keeps working");
  };
  try {
    await echo("before");
    const hello = enc.encode(JSON.stringify({ type: "hello", v: PROTOCOL_VERSION, role: "agent" }));
    const cases: [string, Uint8Array, string][] = [
      ["not JSON", frame(enc.encode("{not json")), "malformed_json"],
      ["oversized length prefix", frame(enc.encode("{}"), 10_000_000), "oversized_frame"],
      [
        "JSON of the wrong shape",
        frame(enc.encode('{"type":"hello","v":"one"}')),
        "invalid_message",
      ],
      ["unknown message type", frame(enc.encode('{"type":"teleport"}')), "invalid_message"],
      // A peer of protocol v1 (flows through the relay, no end-to-end sessions) is refused.
      [
        "an old peer's hello",
        frame(enc.encode('{"type":"hello","v":1,"role":"agent"}')),
        "unsupported_version",
      ],
      [
        "open before hello",
        frame(enc.encode('{"type":"open","id":1,"service":"echo","protocol":"udp"}')),
        "expected_hello",
      ],
      [
        "register from an agent",
        new Uint8Array([
          ...frame(hello),
          ...frame(enc.encode('{"type":"register","services":[{"name":"echo","protocol":"udp"}]}')),
        ]),
        "unexpected_message",
      ],
    ];
    for (const [label, bytes, reason] of cases) {
      const { conn, closed } = await dial(relayPort, tunnel.pki.tls("agent-1"));
      conn.streamWrite(0, bytes);
      const info = await Promise.race([
        closed,
        new Promise<null>((r) => setTimeout(() => r(null), 5000)),
      ]);
      assert.ok(info !== null, `${label}: relay closed the connection`);
      assert.deepEqual(
        info.peer && { isApp: info.peer.isApp, code: info.peer.code, reason: info.peer.reason },
        { isApp: true, code: 1, reason },
        label,
      );
      const samples = await scrape(relayMetrics);
      assert.ok(
        metric(samples, `ztna_relay_protocol_violations_total{reason="${reason}"}`) >= 1,
        `${label}: counted as ${reason}`,
      );
    }
    await echo("after bad frames");

    // Random bytes at the relay's UDP port: parsed, dropped and counted, nothing else. Sent in
    // batches that fit the socket buffer, so every packet reaches the relay to be counted.
    const dropped = async () => {
      let total = 0;
      for (const [key, value] of await scrape(relayMetrics)) {
        // Junk whose first byte has the QUIC fixed bit clear is channel traffic (§7).
        if (
          key.startsWith("ztna_relay_packets_dropped_total") ||
          key.startsWith("ztna_relay_channel_drops_total")
        ) total += value;
      }
      return total;
    };
    const junk = udpClient();
    let seed = 99;
    const rand = () => (seed = (seed * 16807) % 0x7fffffff) / 0x7fffffff;
    const before = await dropped();
    for (let batch = 1; batch <= 10; batch++) {
      for (let i = 0; i < 20; i++) {
        const size = i % 2 ? 1200 : 1 + Math.floor(rand() * 1400);
        await junk.send(new Uint8Array(size).map(() => Math.floor(rand() * 256)), relayPort);
      }
      await waitFor(
        `junk batch ${batch} counted`,
        async () => (await dropped()) - before >= batch * 20,
      );
    }
    junk.close();
    await echo("after junk");
    const health = await fetch(`http://${relayMetrics}/readyz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    client.close();
    await tunnel.stop();
  }
});
