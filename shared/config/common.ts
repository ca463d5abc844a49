/**
 * Config parts shared by the relay, connector and agent schemas.
 *
 * Nested objects use `.prefault()` rather than `.default()`: zod 4 returns a `.default()` value
 * as is, while a prefault is parsed, so the inner field defaults still apply.
 *
 * @module
 */
import { z } from "zod";
import { logLevels } from "../log.ts";

/** Pattern of a service name: lowercase, DNS-label-like, at most 63 characters. */
export const serviceNamePattern: RegExp = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Zod schema: a service name. */
export const serviceNameSchema: z.ZodString = z.string().regex(serviceNamePattern, {
  error: `service name must match ${serviceNamePattern}, e.g. "echo"`,
});

/** Zod schema: a peer identity (as found in its certificate), a non-empty string. */
export const identitySchema: z.ZodString = z.string().min(1, {
  error: "identity must be a non-empty string",
});

/** Zod schema: the relay's TLS files (PEM paths: certificate chain, private key, CA bundle). */
export const relayTlsSchema = z.object({
  cert: z.string().min(1),
  key: z.string().min(1),
  ca: z.string().min(1),
}).strict();

/**
 * Zod schema: a dialing peer's TLS files plus `server_name`, the name verified on the relay
 * certificate (default `"localhost"`).
 */
export const clientTlsSchema = relayTlsSchema.extend({
  server_name: z.string().min(1).prefault("localhost"),
}).strict();

/** Zod schema: the log level, default `"info"`. */
export const logLevelSchema = z.enum(logLevels).prefault("info");

const positiveMs = z.number().int().positive();
const nonNegativeMs = z.number().int().nonnegative();

/** Zod shape: lifecycle timings (ms) every component has. */
export const lifecycleFields = {
  /** Idle time after which a peer connection is closed. */
  idle_timeout_ms: positiveMs.prefault(30_000),
  /** Time flows get to finish after a shutdown signal. */
  drain_ms: nonNegativeMs.prefault(3_000),
  /** Hard bound on shutdown; exceeding it exits 1. */
  shutdown_timeout_ms: positiveMs.prefault(10_000),
};

/** Zod shape: the fields of a dialing peer (connector, agent) that the relay does not have. */
export const dialerFields = {
  /** Idle time after which a flow is forgotten. */
  flow_idle_ms: positiveMs.prefault(60_000),
  /** Bounds for reassembling fragmented datagrams. */
  reassembly: z.object({
    max_bytes: z.number().int().positive().prefault(4_194_304),
    timeout_ms: positiveMs.prefault(2_000),
  }).strict().prefault({}),
};
