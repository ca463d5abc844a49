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
  udpFields,
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
  listen: hostPortSchema.prefault("0.0.0.0:4433").describe(
    "UDP address the QUIC endpoint binds (port 0: ephemeral, the bound port is in the `ready` line).",
  ),
  metrics: metricsAddressSchema.prefault("127.0.0.1:9090").describe(
    "TCP address of the metrics/health listener (`/metrics`, `/healthz`, `/livez`, `/readyz`, " +
      '`/health`), or `"off"`.',
  ),
  tls: relayTlsSchema,
  services: z.record(
    serviceNameSchema,
    z.object({
      connectors: z.array(identitySchema),
      agents: z.array(identitySchema),
    }).strict(),
  ).prefault({}).describe(
    "Policy, default deny: per service, the connector identities that may register it and " +
      "the agent identities that may open flows to it.",
  ),
  id: z.string().min(1).max(128).optional().describe(
    "This relay's name in audit records and on the status page (e.g. the pod name); by " +
      "default its bound QUIC address.",
  ),
  log_level: logLevelSchema,
  ...lifecycleFields,
  ...udpFields,
  ...sandboxFields,
  ...auditFields,
  auth: z.enum(["mtls", "token", "mtls+token"]).prefault("mtls").describe(
    "How connectors and agents authenticate: `mtls` (client certificate, identity = its CN), " +
      "`token` (no client certificate; the `hello` token names the identity) or `mtls+token` " +
      "(both: the token must be listed for the certificate's identity).",
  ),
  tokens: tokensSchema().prefault({}).describe(
    "Accepted tokens per identity: `sha256:<hex>` hashes or `env:`/`file:` references, never " +
      "plain tokens; needed unless `auth` is `mtls`.",
  ),
  limits: z.object({
    max_connections: count.prefault(10_000).describe(
      "Simultaneous QUIC connections; Initials beyond it are dropped (`connection_limit`).",
    ),
    flows_per_connection: count.prefault(1024).describe(
      "Live flows one agent connection may hold; further opens are refused with `limit`.",
    ),
    channels_per_connection: count.prefault(64).describe(
      "Channels (end-to-end sessions carried, one per connector reached) one agent connection " +
        "may hold; further `session_open`s are refused with `limit`.",
    ),
    channel_packets_per_second_per_identity: count.prefault(200_000).describe(
      "Channel packets per second one agent identity may send through the relay over all its " +
        "channels (burst: one second's worth); beyond it they are dropped (`rate_limited`).",
    ),
    handshakes_per_second_per_ip: count.prefault(200).describe(
      "Sustained new handshakes per second from one source address (also the burst).",
    ),
    handshakes_per_second: count.prefault(1000).describe(
      "Sustained new handshakes per second for the whole relay (also the burst).",
    ),
    max_frame_bytes: count.prefault(65_536).describe(
      "Largest control frame accepted after authentication; bigger closes the connection.",
    ),
    connections_per_identity: count.prefault(64).describe(
      "Live authenticated connections one identity may hold; more are closed with LIMIT.",
    ),
    control_frames_per_second: count.prefault(200).describe(
      "Sustained control messages per second per connection (burst: twice as many).",
    ),
    datagram_queue: count.prefault(1024).describe(
      "DATAGRAM frames quiche queues per connection and direction before dropping.",
    ),
    registrations_per_minute: count.prefault(60).describe(
      "register/deregister messages one connector connection may send per minute (burst: as " +
        "many); each can make the relay announce to every allowed agent. More closes it (LIMIT).",
    ),
    preauth_timeout_ms: count.prefault(10_000).describe(
      "Time (ms) a connection has from its first packet to an accepted `hello` (handshake and " +
        "authentication together); past it, it is closed with LIMIT `authentication_timeout`.",
    ),
    preauth_connections_per_ip: count.prefault(64).describe(
      "Unauthenticated connections one source address may hold; its further Initials are " +
        "dropped (`preauth_limit`) until one authenticates or ends.",
    ),
    preauth_connections: count.prefault(2000).describe(
      "Unauthenticated connections in total; a newcomer beyond it evicts the oldest one, so " +
        "the budget cannot be held against new peers.",
    ),
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
