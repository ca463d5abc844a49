import assert from "node:assert/strict";
import { configLeaves, parseLeafText } from "./leaves.ts";
import { relayConfigSchema } from "./relay.ts";
import { agentConfigSchema } from "./agent.ts";

Deno.test("configLeaves()", async (t) => {
  await t.step("walks nested objects; records and arrays are leaves", () => {
    const leaves = configLeaves(relayConfigSchema);
    assert.deepEqual(leaves.map((l) => [l.name, l.env, l.kind, l.required]), [
      ["listen", "ZTNA_LISTEN", "string", false],
      ["metrics", "ZTNA_METRICS", "string", false],
      ["tls.cert", "ZTNA_TLS_CERT", "string", true],
      ["tls.key", "ZTNA_TLS_KEY", "string", true],
      ["tls.ca", "ZTNA_TLS_CA", "string", true],
      ["services", "ZTNA_SERVICES", "json", false],
      ["id", "ZTNA_ID", "string", false],
      ["log_level", "ZTNA_LOG_LEVEL", "string", false],
      ["idle_timeout_ms", "ZTNA_IDLE_TIMEOUT_MS", "number", false],
      ["drain_ms", "ZTNA_DRAIN_MS", "number", false],
      ["shutdown_timeout_ms", "ZTNA_SHUTDOWN_TIMEOUT_MS", "number", false],
      ["udp.socket", "ZTNA_UDP_SOCKET", "string", false],
      ["udp.buffer_bytes", "ZTNA_UDP_BUFFER_BYTES", "number", false],
      ["strict_sandbox", "ZTNA_STRICT_SANDBOX", "boolean", false],
      ["audit.destination", "ZTNA_AUDIT_DESTINATION", "string", false],
      ["audit.file", "ZTNA_AUDIT_FILE", "string", false],
      ["audit.max_bytes", "ZTNA_AUDIT_MAX_BYTES", "number", false],
      ["audit.keep", "ZTNA_AUDIT_KEEP", "number", false],
      ["audit.queue", "ZTNA_AUDIT_QUEUE", "number", false],
      ["auth", "ZTNA_AUTH", "string", false],
      ["tokens", "ZTNA_TOKENS", "json", false],
      ["limits.max_connections", "ZTNA_LIMITS_MAX_CONNECTIONS", "number", false],
      ["limits.flows_per_connection", "ZTNA_LIMITS_FLOWS_PER_CONNECTION", "number", false],
      ["limits.channels_per_connection", "ZTNA_LIMITS_CHANNELS_PER_CONNECTION", "number", false],
      [
        "limits.channel_packets_per_second_per_identity",
        "ZTNA_LIMITS_CHANNEL_PACKETS_PER_SECOND_PER_IDENTITY",
        "number",
        false,
      ],
      [
        "limits.handshakes_per_second_per_ip",
        "ZTNA_LIMITS_HANDSHAKES_PER_SECOND_PER_IP",
        "number",
        false,
      ],
      ["limits.handshakes_per_second", "ZTNA_LIMITS_HANDSHAKES_PER_SECOND", "number", false],
      ["limits.max_frame_bytes", "ZTNA_LIMITS_MAX_FRAME_BYTES", "number", false],
      [
        "limits.connections_per_identity",
        "ZTNA_LIMITS_CONNECTIONS_PER_IDENTITY",
        "number",
        false,
      ],
      [
        "limits.control_frames_per_second",
        "ZTNA_LIMITS_CONTROL_FRAMES_PER_SECOND",
        "number",
        false,
      ],
      ["limits.datagram_queue", "ZTNA_LIMITS_DATAGRAM_QUEUE", "number", false],
      ["limits.registrations_per_minute", "ZTNA_LIMITS_REGISTRATIONS_PER_MINUTE", "number", false],
      ["limits.preauth_timeout_ms", "ZTNA_LIMITS_PREAUTH_TIMEOUT_MS", "number", false],
      [
        "limits.preauth_connections_per_ip",
        "ZTNA_LIMITS_PREAUTH_CONNECTIONS_PER_IP",
        "number",
        false,
      ],
      ["limits.preauth_connections", "ZTNA_LIMITS_PREAUTH_CONNECTIONS", "number", false],
    ]);
  });

  await t.step("lists of strings and lists of objects differ", () => {
    const kinds = Object.fromEntries(configLeaves(agentConfigSchema).map((l) => [l.name, l.kind]));
    assert.equal(kinds.relays, "list");
    assert.equal(kinds.forwards, "json");
    assert.equal(kinds["tls.server_name"], "string");
  });
});

Deno.test("parseLeafText()", () => {
  assert.equal(parseLeafText("number", "10"), 10);
  assert.equal(parseLeafText("number", "ten"), "ten");
  assert.equal(parseLeafText("boolean", "true"), true);
  assert.equal(parseLeafText("string", "[1]"), "[1]");
  assert.deepEqual(parseLeafText("json", '{"a":1}'), { a: 1 });
  assert.deepEqual(parseLeafText("list", '["a:1","b:2"]'), ["a:1", "b:2"]);
  assert.deepEqual(parseLeafText("list", "a:1, b:2"), ["a:1", "b:2"]);
});
