/**
 * Reads config leaves from command-line flags: `--tls.cert=path`, `--tls.cert path`,
 * `--relays a:1 --relays b:2`, plus `--config FILE`.
 *
 * @module
 */
import { ConfigError } from "./config_error.ts";
import { type ConfigLeaf, parseLeafText } from "./leaves.ts";

/** The result of {@linkcode parseFlags}. */
export interface ParsedFlags {
  /** The `--config` file path, if given. */
  configPath?: string;
  /** Values by dotted leaf name. */
  values: Map<string, unknown>;
}

/**
 * Parses flags named after the schema's leaves. A list flag may repeat (items accumulate); any
 * other flag given twice keeps the last value. A boolean flag without a value means `true`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { configLeaves } from "./leaves.ts";
 * import { parseFlags } from "./flags.ts";
 *
 * const leaves = configLeaves(z.object({ relays: z.array(z.string()), n: z.number() }));
 * const { values } = parseFlags(["--relays", "a:1", "--relays=b:2", "--n", "3"], leaves);
 * assert.deepEqual(values.get("relays"), ["a:1", "b:2"]);
 * assert.equal(values.get("n"), 3);
 * ```
 *
 * @param args Command-line arguments.
 * @param leaves The schema's leaves.
 * @returns The config path and leaf values.
 * @throws {ConfigError} On an unknown flag, a positional argument or a missing value.
 */
export function parseFlags(args: readonly string[], leaves: readonly ConfigLeaf[]): ParsedFlags {
  const byName = new Map(leaves.map((leaf) => [leaf.name, leaf]));
  const values = new Map<string, unknown>();
  let configPath: string | undefined;

  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (!arg.startsWith("--") || arg === "--") {
      throw new ConfigError(arg, "flag", "unexpected argument; flags look like --name=value");
    }
    const eq = arg.indexOf("=");
    const written = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    // Keys are snake_case; the CLI habit of dashes (--strict-sandbox) names the same leaf.
    const name = byName.has(written) ? written : written.replaceAll("-", "_");
    const leaf = byName.get(name);
    if (name !== "config" && !leaf) {
      const known = ["config", ...byName.keys()].map((n) => `--${n}`).join(", ");
      throw new ConfigError(`--${written}`, "flag", `unknown flag; known flags: ${known}`);
    }

    let text: string;
    if (eq !== -1) {
      text = arg.slice(eq + 1);
    } else if (leaf?.kind === "boolean" && (i + 1 >= args.length || args[i + 1].startsWith("--"))) {
      text = "true";
    } else if (i + 1 < args.length) {
      text = args[++i];
    } else {
      throw new ConfigError(`--${written}`, "flag", "flag needs a value");
    }

    if (!leaf) {
      configPath = text;
      continue;
    }
    const value = parseLeafText(leaf.kind, text);
    const previous = values.get(name);
    values.set(
      name,
      leaf.kind === "list" && Array.isArray(previous) && Array.isArray(value)
        ? [...previous, ...value]
        : value,
    );
  }
  return { configPath, values };
}
