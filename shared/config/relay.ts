/**
 * Config schema of the relay.
 *
 * @module
 */
import { z } from "zod";
import { hostPortSchema, metricsAddressSchema } from "./address.ts";
import {
  auditFields,
  identitySchema,
  lifecycleFields,
  logLevelSchema,
  relayTlsSchema,
  sandboxFields,
  serviceNameSchema,
} from "./common.ts";
import { tokensSchema } from "./tokens.ts";

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
  /**
   * This relay's name in audit records and on the status page (e.g. the pod name); by default
   * its bound QUIC address.
   */
  id: z.string().min(1).max(128).optional(),
  log_level: logLevelSchema,
  ...lifecycleFields,
  ...sandboxFields,
  ...auditFields,
  /**
   * How connectors and agents authenticate: `mtls` (client certificate, identity = its CN),
   * `token` (no client certificate; the `hello` token names the identity) or `mtls+token`
   * (both: the token must be listed for the certificate's identity).
   */
  auth: z.enum(["mtls", "token", "mtls+token"]).prefault("mtls"),
  /** Accepted tokens per identity: `sha256:<hex>` hashes or `env:`/`file:` references. */
  tokens: tokensSchema().prefault({}),
  limits: z.object({
    max_connections: count.prefault(10_000),
    flows_per_connection: count.prefault(1024),
    handshakes_per_second_per_ip: count.prefault(200),
    handshakes_per_second: count.prefault(1000),
    max_frame_bytes: count.prefault(65_536),
    /** Live authenticated connections one identity may hold; more are closed with LIMIT. */
    connections_per_identity: count.prefault(64),
    /** Sustained control messages per second per connection (burst: twice as many). */
    control_frames_per_second: count.prefault(200),
    /** DATAGRAM frames quiche queues per connection and direction before dropping. */
    datagram_queue: count.prefault(1024),
    /**
     * register/deregister messages one connector connection may send per minute (burst: as
     * many); each can make the relay announce to every allowed agent. More closes it (LIMIT).
     */
    registrations_per_minute: count.prefault(60),
    /**
     * Time a connection has from its first packet to an accepted `hello` (handshake and
     * authentication together); past it, it is closed with LIMIT `authentication_timeout`.
     */
    preauth_timeout_ms: count.prefault(10_000),
    /**
     * Unauthenticated connections one source address may hold; its further Initials are
     * dropped (`preauth_limit`) until one authenticates or ends.
     */
    preauth_connections_per_ip: count.prefault(64),
    /**
     * Unauthenticated connections in total; a newcomer beyond it evicts the oldest one, so
     * the budget cannot be held against new peers.
     */
    preauth_connections: count.prefault(2000),
  }).strict().prefault({}),
}).strict().superRefine((config, ctx) => {
  if (config.auth !== "mtls" && Object.keys(config.tokens).length === 0) {
    ctx.addIssue({
      code: "custom",
      path: ["tokens"],
      message: `auth "${config.auth}" needs at least one identity under tokens`,
    });
  }
});

/** The relay config after parsing and defaults. */
export type RelayConfig = z.infer<typeof relayConfigSchema>;
