/**
 * Config for the relay, connector and agent: zod schemas, loading with precedence
 * (defaults < JSON file < `ZTNA_*` env < flags), addresses and secret references.
 *
 * @example Usage
 * ```ts ignore
 * import { loadConfigOrExit, relayConfigSchema } from "../shared/config/mod.ts";
 *
 * const config = loadConfigOrExit(relayConfigSchema, "relay");
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
