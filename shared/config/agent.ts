/**
 * Config schema of the agent.
 *
 * @module
 */
import { z } from "zod";
import { formatHostPort, metricsAddressSchema, serviceUrlSchema } from "./address.ts";
import { dialerConfigSchema, serviceNameSchema } from "./common.ts";

/**
 * Zod schema of the agent config (JSON keys are snake_case; unknown keys are errors).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { agentConfigSchema } from "./agent.ts";
 *
 * const config = agentConfigSchema.parse({
 *   relays: ["127.0.0.1:4433"],
 *   tls: { cert: "c.pem", key: "k.pem", ca: "ca.pem" },
 *   forwards: [{ listen: "udp://127.0.0.1:5353", service: "dns" }],
 * });
 * assert.equal(config.metrics, null);
 * assert.equal(config.forwards[0].listen.port, 5353);
 * ```
 */
export const agentConfigSchema = dialerConfigSchema({
  metrics: metricsAddressSchema.prefault("off").describe(
    'TCP address of the metrics/health listener, or `"off"`.',
  ),
  connect_hold_ms: z.number().int().nonnegative().prefault(5_000).describe(
    "How long (ms) a new local TCP connection or UDP datagram waits for a relay session when " +
      "none is up (start-up, reconnect) before it is refused; 0 refuses at once.",
  ),
  forwards: z.array(
    z.object({
      listen: serviceUrlSchema,
      service: serviceNameSchema,
    }).strict(),
  ).min(1, { error: "at least one forward is required" }).superRefine((forwards, ctx) => {
    // Two forwards on one socket would fail at bind time; say so at load time instead.
    const seen = new Set<string>();
    forwards.forEach(({ listen }, index) => {
      const key = `${listen.protocol}://${formatHostPort(listen)}`;
      if (listen.port !== 0 && seen.has(key)) {
        ctx.addIssue({
          code: "custom",
          path: [index, "listen"],
          message: `duplicate listen address ${key}`,
        });
      }
      seen.add(key);
    });
  }).describe(
    "Local listeners in order: each `listen` URL (udp:// or tcp://, port 0: ephemeral) " +
      "forwards to one `service` behind the relay; the `ready` line lists them in this order.",
  ),
});

/** The agent config after parsing and defaults. */
export type AgentConfig = z.infer<typeof agentConfigSchema>;
