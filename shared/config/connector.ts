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
  /** Metrics/health listener, or null when "off". */
  metrics: metricsAddressSchema.prefault("127.0.0.1:9091"),
  /** Services this connector offers, by name, with their backend addresses. */
  services: z.record(
    serviceNameSchema,
    z.preprocess(
      (value) => typeof value === "string" ? [value] : value,
      z.array(serviceUrlSchema).min(1, { error: "at least one backend URL is required" }),
    ),
  ).refine((services) => Object.keys(services).length > 0, {
    error: "at least one service is required",
  }),
  /**
   * Circuit breaker per TCP backend: `failures` consecutive connect failures open it; after
   * `reset_ms` one probe connect may close it again.
   */
  circuit: z.object({
    failures: z.number().int().positive().prefault(5),
    reset_ms: z.number().int().nonnegative().prefault(5_000),
  }).strict().prefault({}),
  /** A TCP backend connect taking longer than this fails (and counts for the breaker). */
  connect_timeout_ms: z.number().int().positive().prefault(5_000),
  /**
   * Live flows (UDP and TCP; each holds one socket) this connector keeps, counted across all
   * relays: `flows_per_agent` per agent identity (opens from a relay that names none share
   * one "unknown" budget), `max_flows` in total. Keep `max_flows` well below the process's
   * open-file limit (`LimitNOFILE=65536` in deploy/systemd) so the relay sessions, the
   * metrics listener and the runtime keep descriptors. Opens beyond either are refused
   * with `limit`.
   */
  limits: z.object({
    flows_per_agent: z.number().int().positive().prefault(1024),
    max_flows: z.number().int().positive().prefault(16_384),
  }).strict().prefault({}),
  /**
   * Addresses of backend host names, used instead of a lookup (the launcher fills in what it
   * resolved at start). A name the connector looks up itself needs the sandbox to grant the
   * bare name, which Deno reads as every port of that host.
   */
  hosts: z.record(z.string().min(1), z.array(ipLiteralSchema).min(1)).prefault({}),
});

/** The connector config after parsing and defaults. */
export type ConnectorConfig = z.infer<typeof connectorConfigSchema>;
