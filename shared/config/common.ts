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
import { hostPortSchema } from "./address.ts";
import { secretSchema } from "./secret.ts";

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
 * certificate (default `"localhost"`). `cert` and `key` (the client certificate) go together
 * and may both be absent when the peer authenticates with a `token` only.
 */
export const clientTlsSchema = relayTlsSchema.extend({
  cert: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
  server_name: z.string().min(1).prefault("localhost"),
}).strict().refine((tls) => (tls.cert === undefined) === (tls.key === undefined), {
  error: "tls.cert and tls.key go together: set both or neither",
  path: ["key"],
});

/** Zod shape: how a dialing peer (connector, agent) authenticates besides its certificate. */
export const dialerAuthFields = {
  /**
   * Token sent in `hello` when the relay's `auth` is `token` or `mtls+token`: a secret
   * reference, `env:NAME` or `file:/path`, never the token itself.
   */
  token: secretSchema().optional(),
};

/**
 * The check every dialer config passes: it has a client certificate or a token (or both),
 * since a relay accepts nothing else.
 */
function requireCredential(
  config: { tls: { cert?: string }; token?: unknown },
  ctx: z.RefinementCtx,
): void {
  if (config.tls.cert === undefined && config.token === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["tls", "cert"],
      message: "required: a client certificate (tls.cert and tls.key) or a token",
    });
  }
}

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

/** Zod schema: where a component's audit records go (docs/AUDIT.md). */
export const auditSchema = z.object({
  /** `stdout` (beside the logs), `file` (with rotation) or `off`. */
  destination: z.enum(["stdout", "file", "off"]).prefault("stdout"),
  /** The live audit file when `destination` is `file`; the sandbox may write only it. */
  file: z.string().min(1).optional(),
  /** The live file is rotated before a write would take it past this size. */
  max_bytes: z.number().int().min(4096).prefault(104_857_600),
  /** Rotated files kept (`<file>.1` newest ... `<file>.<keep>`); 0 truncates instead. */
  keep: z.number().int().nonnegative().max(100).prefault(5),
  /** Records waiting for the writer at most; more are dropped and counted. */
  queue: z.number().int().positive().prefault(4096),
}).strict().refine((audit) => audit.destination !== "file" || audit.file !== undefined, {
  error: 'required when audit.destination is "file"',
  path: ["file"],
});

/** Zod shape: the audit log every component has. */
export const auditFields = {
  audit: auditSchema.prefault({}),
};

/** Zod shape: security fields every component has. */
export const sandboxFields = {
  /**
   * Refuse to start (exit 2) when the process holds more Deno permissions than its config
   * needs, instead of logging a warning. Also `--strict-sandbox`.
   */
  strict_sandbox: z.boolean().prefault(false),
};

/** Zod shape: the fields of a dialing peer (connector, agent) that the relay does not have. */
export const dialerFields = {
  /** Relays to dial (a connector keeps a connection to each, an agent uses one at a time). */
  relays: z.array(hostPortSchema).min(1, { error: "at least one relay is required" }),
  tls: clientTlsSchema,
  /** Idle time after which a flow is forgotten. */
  flow_idle_ms: positiveMs.prefault(60_000),
  /**
   * Reconnect backoff: the delay before redial n is random in [0, min(max_ms, base_ms * 2^n)),
   * reset once a session has been up for 30 s. Defaults 1 s doubling to 30 s.
   */
  reconnect: z.object({
    base_ms: positiveMs.prefault(1_000),
    max_ms: positiveMs.prefault(30_000),
  }).strict().refine((r) => r.max_ms >= r.base_ms, {
    error: "reconnect.max_ms must be at least reconnect.base_ms",
    path: ["max_ms"],
  }).prefault({}),
  /** Bounds for reassembling fragmented datagrams. */
  reassembly: z.object({
    max_bytes: z.number().int().positive().prefault(4_194_304),
    timeout_ms: positiveMs.prefault(2_000),
  }).strict().prefault({}),
};

/**
 * The config schema of a dialing peer: its own `fields` plus everything connectors and agents
 * share (relays, TLS, credentials, log level, lifecycle, sandbox); unknown keys are errors.
 */
export function dialerConfigSchema<T extends z.ZodRawShape>(fields: T) {
  return z.object({
    ...fields,
    log_level: logLevelSchema,
    ...lifecycleFields,
    ...dialerFields,
    ...dialerAuthFields,
    ...sandboxFields,
    ...auditFields,
  }).strict().superRefine((config, ctx) =>
    requireCredential(config as { tls: { cert?: string }; token?: unknown }, ctx)
  );
}
