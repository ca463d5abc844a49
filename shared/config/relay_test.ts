import assert from "node:assert/strict";
import { relayConfigSchema } from "./relay.ts";

const tls = { cert: "relay.pem", key: "relay.key", ca: "ca.pem" };

Deno.test("relayConfigSchema", async (t) => {
  await t.step("fills every default", () => {
    assert.deepEqual(relayConfigSchema.parse({ tls }), {
      listen: { host: "0.0.0.0", port: 4433 },
      metrics: { host: "127.0.0.1", port: 9090 },
      tls,
      services: {},
      log_level: "info",
      idle_timeout_ms: 30000,
      drain_ms: 3000,
      shutdown_timeout_ms: 10000,
      udp: { socket: "auto", buffer_bytes: 4_194_304 },
      strict_sandbox: false,
      audit: { destination: "stdout", max_bytes: 104_857_600, keep: 5, queue: 4096 },
      auth: "mtls",
      tokens: {},
      limits: {
        max_connections: 10000,
        flows_per_connection: 1024,
        channels_per_connection: 64,
        channel_packets_per_second_per_identity: 200_000,
        handshakes_per_second_per_ip: 200,
        handshakes_per_second: 1000,
        max_frame_bytes: 65536,
        connections_per_identity: 64,
        control_frames_per_second: 200,
        datagram_queue: 1024,
        registrations_per_minute: 60,
        preauth_timeout_ms: 10_000,
        preauth_connections_per_ip: 64,
        preauth_connections: 2000,
      },
    });
  });

  await t.step("accepts services with identities and partial limits", () => {
    const config = relayConfigSchema.parse({
      tls,
      metrics: "off",
      services: { "echo": { connectors: ["conn-1"], agents: ["alice", "bob"] } },
      limits: { max_connections: 5 },
    });
    assert.equal(config.metrics, null);
    assert.deepEqual(config.services.echo.agents, ["alice", "bob"]);
    assert.equal(config.limits.max_connections, 5);
    assert.equal(config.limits.max_frame_bytes, 65536);
  });

  await t.step("rejects unknown keys, bad service names and empty identities", () => {
    const unknown = relayConfigSchema.safeParse({ tls, listn: "0.0.0.0:1" });
    assert.equal(unknown.error!.issues[0].code, "unrecognized_keys");
    const tlsServerName = relayConfigSchema.safeParse({ tls: { ...tls, server_name: "x" } });
    assert.deepEqual(tlsServerName.error!.issues[0].path, ["tls"]);
    const badName = relayConfigSchema.safeParse({
      tls,
      services: { Echo: { connectors: [], agents: [] } },
    });
    assert.deepEqual(badName.error!.issues[0].path, ["services", "Echo"]);
    const empty = relayConfigSchema.safeParse({
      tls,
      services: { echo: { connectors: [""], agents: [] } },
    });
    assert.deepEqual(empty.error!.issues[0].path, ["services", "echo", "connectors", 0]);
    assert.equal(relayConfigSchema.safeParse({ tls, log_level: "loud" }).success, false);
    assert.equal(relayConfigSchema.safeParse({ tls, drain_ms: 1.5 }).success, false);
  });
});
