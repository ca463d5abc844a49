/**
 * The ztna-edge release version. Exported as the `version` label of `ztna_build_info` and
 * printed by `--version`; the release workflow bumps it.
 *
 * @example Usage
 * ```ts
 * import { VERSION } from "./version.ts";
 * import assert from "node:assert/strict";
 *
 * assert.match(VERSION, /^\d+\.\d+\.\d+/);
 * ```
 */
export const VERSION = "0.1.0";
