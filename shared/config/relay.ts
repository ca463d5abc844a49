/**
 * Config schema of the relay.
 *
 * @module
 */
import { z } from "zod";
import { hostPortSchema, metricsAddressSchema } from "./address.ts";
import {
  identitySchema,
  lifecycleFields,
  logLevelSchema,
  relayTlsSchema,
  serviceNameSchema,
} from "./common.ts";

const count = z.number().int().positive();

/**
 * Zod schema of the relay config (JSON keys are snake_case; unknown keys are errors).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { relayConfigSchema } from "./relay.ts";
 *
 * const config = relayConfigSchema.parse({ tls: { cert: "c.pem", key: "k.pem", ca: "ca.pem" } });
 * assert.deepEqual(config.listen, { host: "0.0.0.0", port: 4433 });
 * assert.equal(config.limits.max_connections, 10000);
 * ```
 */
export const relayConfigSchema = z.object({
  /** UDP address the QUIC endpoint binds. */
  listen: hostPortSchema.prefault("0.0.0.0:4433"),
  /** Metrics/health listener, or null when "off". */
  metrics: metricsAddressSchema.prefault("127.0.0.1:9090"),
  tls: relayTlsSchema,
  /** Policy: which connector and agent identities may serve and use each service. */
  services: z.record(
    serviceNameSchema,
    z.object({
      connectors: z.array(identitySchema),
      agents: z.array(identitySchema),
    }).strict(),
  ).prefault({}),
  log_level: logLevelSchema,
  ...lifecycleFields,
  limits: z.object({
    max_connections: count.prefault(10_000),
    flows_per_connection: count.prefault(1024),
    handshakes_per_second_per_ip: count.prefault(200),
    max_frame_bytes: count.prefault(65_536),
  }).strict().prefault({}),
}).strict();

/** The relay config after parsing and defaults. */
export type RelayConfig = z.infer<typeof relayConfigSchema>;
