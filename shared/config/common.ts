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
  cert: z.string().min(1).describe("PEM file: the relay's certificate chain, leaf first."),
  key: z.string().min(1).describe("PEM file: the private key of `tls.cert`."),
  ca: z.string().min(1).describe(
    "PEM file: the CA bundle that client certificates of connectors and agents must chain to.",
  ),
}).strict();

/**
 * Zod schema: a dialing peer's TLS files plus `server_name`, the name verified on the relay
 * certificate (default `"localhost"`). `cert` and `key` (the client certificate) go together
 * and may both be absent when the peer authenticates with a `token` only.
 */
export const clientTlsSchema = relayTlsSchema.extend({
  cert: z.string().min(1).optional().describe(
    "PEM file: this peer's client certificate (its identity is the CN); set with `tls.key`, " +
      "or leave both unset and authenticate with `token` only.",
  ),
  key: z.string().min(1).optional().describe("PEM file: the private key of `tls.cert`."),
  ca: z.string().min(1).describe("PEM file: the CA bundle the relay's certificate must chain to."),
  server_name: z.string().min(1).prefault("localhost").describe(
    "DNS name verified on the relay's certificate (a SAN of it); BoringSSL does not check IP " +
      "SANs, so use a DNS name.",
  ),
}).strict().refine((tls) => (tls.cert === undefined) === (tls.key === undefined), {
  error: "tls.cert and tls.key go together: set both or neither",
  path: ["key"],
});

/** Zod shape: how a dialing peer (connector, agent) authenticates besides its certificate. */
export const dialerAuthFields = {
  token: secretSchema().optional().describe(
    "Token sent in `hello` when the relay's `auth` is `token` or `mtls+token`: a secret " +
      "reference, `env:NAME` or `file:/path`, never the token itself.",
  ),
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
export const logLevelSchema = z.enum(logLevels).prefault("info").describe(
  "Lowest level of the JSON log lines printed on stdout.",
);

const positiveMs = z.number().int().positive();
const nonNegativeMs = z.number().int().nonnegative();

/** Zod shape: lifecycle timings (ms) every component has. */
export const lifecycleFields = {
  idle_timeout_ms: positiveMs.prefault(30_000).describe(
    "QUIC idle timeout (ms): a peer connection that is silent this long is closed; " +
      "connectors and agents ping at a third of it.",
  ),
  drain_ms: nonNegativeMs.prefault(3_000).describe(
    "Time (ms) flows get to finish after SIGTERM/SIGINT, while readiness reports 503.",
  ),
  shutdown_timeout_ms: positiveMs.prefault(10_000).describe(
    "Hard bound (ms) on shutdown; exceeding it logs and exits 1.",
  ),
};

/** Zod schema: where a component's audit records go (docs/AUDIT.md). */
export const auditSchema = z.object({
  destination: z.enum(["stdout", "file", "off"]).prefault("stdout").describe(
    "Where audit records go: `stdout` (beside the logs), `file` (with rotation) or `off` " +
      "(docs/AUDIT.md).",
  ),
  file: z.string().min(1).optional().describe(
    "The live audit file, required when `audit.destination` is `file`; the sandbox may write " +
      "only it and its rotated names.",
  ),
  max_bytes: z.number().int().min(4096).prefault(104_857_600).describe(
    "The live audit file is rotated before a write would take it past this size.",
  ),
  keep: z.number().int().nonnegative().max(100).prefault(5).describe(
    "Rotated audit files kept (`<file>.1` newest ... `<file>.<keep>`); 0 truncates instead.",
  ),
  queue: z.number().int().positive().prefault(4096).describe(
    "Audit records waiting for the writer at most; more are dropped and counted " +
      "(`audit_dropped_total`), never holding a flow.",
  ),
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
  strict_sandbox: z.boolean().prefault(false).describe(
    "Refuse to start (exit 2) when the process holds more Deno permissions than its config " +
      "needs, instead of logging a warning. Also `--strict-sandbox`.",
  ),
};

/** Zod shape: the UDP socket layer every component has. */
export const udpFields = {
  udp: z.object({
    socket: z.enum(["auto", "batched", "portable"]).prefault("auto").describe(
      "UDP socket kind: `batched` moves datagrams in batches through libc (`recvmmsg`/" +
        "`sendmmsg`, GSO, large buffers; Linux, needs `--allow-ffi` for libc), `portable` " +
        "one Deno op per datagram; `auto` picks `batched` where it can run and logs the choice.",
    ),
    buffer_bytes: z.number().int().min(65_536).max(1_073_741_824).prefault(4_194_304).describe(
      "Receive and send buffer size asked of the kernel per batched socket; capped by " +
        "`net.core.rmem_max`/`wmem_max` (a warning names them) unless the process may force " +
        "it (root or CAP_NET_ADMIN).",
    ),
  }).strict().prefault({}),
};

/** Zod shape: the fields of a dialing peer (connector, agent) that the relay does not have. */
export const dialerFields = {
  relays: z.array(hostPortSchema).min(1, { error: "at least one relay is required" }).describe(
    "Relays to dial: a connector keeps a connection to each, an agent uses one at a time.",
  ),
  tls: clientTlsSchema,
  flow_idle_ms: positiveMs.prefault(60_000).describe(
    "Time (ms) without traffic after which a flow and its socket are forgotten.",
  ),
  // The delay before redial n is random in [0, min(max_ms, base_ms * 2^n)), reset once a
  // session has been up for 30 s (shared/backoff.ts).
  reconnect: z.object({
    base_ms: positiveMs.prefault(1_000).describe(
      "Reconnect backoff base (ms): redial n waits a random time below min(max_ms, base_ms * 2^n).",
    ),
    max_ms: positiveMs.prefault(30_000).describe(
      "Reconnect backoff cap (ms); the backoff resets once a session has been up for 30 s.",
    ),
  }).strict().refine((r) => r.max_ms >= r.base_ms, {
    error: "reconnect.max_ms must be at least reconnect.base_ms",
    path: ["max_ms"],
  }).prefault({}),
  reassembly: z.object({
    max_bytes: z.number().int().positive().prefault(4_194_304).describe(
      "Bytes of fragments of oversized UDP payloads held for reassembly; beyond it the " +
        "oldest partial datagrams are dropped.",
    ),
    timeout_ms: positiveMs.prefault(2_000).describe(
      "Time (ms) a partly received fragmented datagram waits for its missing fragments.",
    ),
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
    ...udpFields,
    ...dialerFields,
    ...dialerAuthFields,
    ...sandboxFields,
    ...auditFields,
  }).strict().superRefine((config, ctx) =>
    requireCredential(config as { tls: { cert?: string }; token?: unknown }, ctx)
  );
}
