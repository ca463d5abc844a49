/**
 * Config for the relay, connector and agent: zod schemas, loading with precedence
 * (defaults < JSON file < `ZTNA_*` env < flags), addresses and secret references.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadConfig, relayConfigSchema } from "./mod.ts";
 *
 * const config = loadConfig(relayConfigSchema, {
 *   args: ["--config", "relay.json", "--limits.max_connections=100"],
 *   env: {},
 *   readFile: () => '{"tls": {"cert": "relay.pem", "key": "relay.key", "ca": "ca.pem"}}',
 * });
 * assert.equal(config.limits.max_connections, 100);
 * assert.equal(config.auth, "mtls");
 * ```
 *
 * @module
 */
export * from "./address.ts";
export * from "./agent.ts";
export * from "./common.ts";
export * from "./config_error.ts";
export * from "./connector.ts";
export {
  configEnvNames,
  type ConfigSource,
  loadConfig,
  loadConfigOrExit,
  processConfigSource,
} from "./load.ts";
export * from "./relay.ts";
export * from "./secret.ts";
