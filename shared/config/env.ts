/**
 * Reads config leaves from `ZTNA_*` environment variables.
 *
 * @module
 */
import { type ConfigLeaf, parseLeafText } from "./leaves.ts";

/**
 * Collects the values of all leaves whose environment variable is set. Other `ZTNA_*` variables
 * are ignored, so one environment can serve several components.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { configLeaves } from "./leaves.ts";
 * import { readEnvValues } from "./env.ts";
 *
 * const leaves = configLeaves(z.object({ limits: z.object({ max: z.number() }) }));
 * const values = readEnvValues({ ZTNA_LIMITS_MAX: "5", ZTNA_OTHER: "x" }, leaves);
 * assert.deepEqual([...values], [["limits.max", 5]]);
 * ```
 *
 * @param env The environment.
 * @param leaves The schema's leaves.
 * @returns Values by dotted leaf name.
 */
export function readEnvValues(
  env: Record<string, string>,
  leaves: readonly ConfigLeaf[],
): Map<string, unknown> {
  const values = new Map<string, unknown>();
  for (const leaf of leaves) {
    const text = Object.hasOwn(env, leaf.env) ? env[leaf.env] : undefined;
    if (text !== undefined) values.set(leaf.name, parseLeafText(leaf.kind, text));
  }
  return values;
}
