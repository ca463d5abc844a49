/**
 * Config schema of the connector.
 *
 * @module
 */
import { z } from "zod";
import { isIpLiteral } from "../resolve_host.ts";
import { metricsAddressSchema, serviceUrlSchema } from "./address.ts";
import { dialerConfigSchema, serviceNameSchema } from "./common.ts";

const ipLiteralSchema = z.string().refine(isIpLiteral, {
  error: "expected an IP address, e.g. 10.0.0.5 or fd00::5",
});

/**
 * Zod schema of the connector config (JSON keys are snake_case; unknown keys are errors).
 *
 * A service maps to one backend URL or a list of them (e.g. UDP and TCP on port 53); the parsed
 * value is always a list.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { connectorConfigSchema } from "./connector.ts";
 *
 * const config = connectorConfigSchema.parse({
 *   relays: ["127.0.0.1:4433"],
 *   tls: { cert: "c.pem", key: "k.pem", ca: "ca.pem" },
 *   services: { echo: "udp://127.0.0.1:7" },
 * });
 * assert.deepEqual(config.services.echo, [{ protocol: "udp", host: "127.0.0.1", port: 7 }]);
 * assert.equal(config.tls.server_name, "localhost");
 * ```
 */
export const connectorConfigSchema = dialerConfigSchema({
  metrics: metricsAddressSchema.prefault("127.0.0.1:9091").describe(
    'TCP address of the metrics/health listener, or `"off"`.',
  ),
  services: z.record(
    serviceNameSchema,
    z.preprocess(
      (value) => typeof value === "string" ? [value] : value,
      z.array(serviceUrlSchema).min(1, { error: "at least one backend URL is required" }),
    ),
  ).refine((services) => Object.keys(services).length > 0, {
    error: "at least one service is required",
  }).describe(
    "Services this connector offers: name → backend URL, or a list of them (e.g. UDP and TCP " +
      "on port 53). UDP replies are accepted only from the backend's IP.",
  ),
  agents: z.record(serviceNameSchema, z.array(z.string().min(1).max(256))).prefault({}).describe(
    "Agent identities (certificate CNs) this connector serves, per service, checked on every " +
      "end-to-end session in addition to the relay's grant: a relay cannot open a listed " +
      "service to anyone else. A service not listed here serves whoever the relay grants.",
  ),
  circuit: z.object({
    failures: z.number().int().positive().prefault(5).describe(
      "Consecutive TCP connect failures to a backend that open its circuit breaker.",
    ),
    reset_ms: z.number().int().nonnegative().prefault(5_000).describe(
      "Time (ms) an open breaker waits before one probe connect may close it again.",
    ),
  }).strict().prefault({}),
  connect_timeout_ms: z.number().int().positive().prefault(5_000).describe(
    "A TCP backend connect taking longer than this (ms) fails and counts for the breaker.",
  ),
  // Flows are counted across all relays; keep `max_flows` well below the process's open-file
  // limit (`LimitNOFILE=65536` in deploy/systemd) so the relay sessions, the metrics listener
  // and the runtime keep descriptors.
  limits: z.object({
    flows_per_agent: z.number().int().positive().prefault(1024).describe(
      "Live flows (UDP and TCP, one socket each) per agent identity, across all relays; opens " +
        'from a relay that names no agent share one "unknown" budget. More are refused (`limit`).',
    ),
    sessions_per_agent: z.number().int().positive().prefault(64).describe(
      "End-to-end sessions one agent identity may hold with this connector at once (handshakes " +
        "included); more are refused.",
    ),
    max_flows: z.number().int().positive().prefault(16_384).describe(
      "Live flows in total; keep it well below the open-file limit. More are refused (`limit`).",
    ),
  }).strict().prefault({}),
  // A name the connector looks up itself needs the sandbox to grant the bare name, which Deno
  // reads as every port of that host; hence addresses resolved up front.
  hosts: z.record(z.string().min(1), z.array(ipLiteralSchema).min(1)).prefault({}).describe(
    "IP addresses of backend host names, used instead of a DNS lookup (the launcher fills in " +
      "what it resolved at start).",
  ),
});

/** The connector config after parsing and defaults. */
export type ConnectorConfig = z.infer<typeof connectorConfigSchema>;
