/**
 * Loads a component's config from its four sources, in increasing precedence:
 * schema defaults < JSON file (`--config FILE` or `ZTNA_CONFIG`) < `ZTNA_*` env < flags.
 *
 * @module
 */
import type { z } from "zod";
import { ConfigError, type ConfigSourceKind } from "./config_error.ts";
import { readEnvValues } from "./env.ts";
import { parseFlags } from "./flags.ts";
import { type ConfigLeaf, configLeaves } from "./leaves.ts";

export { ConfigError, type ConfigSourceKind } from "./config_error.ts";

/** The raw inputs a config is loaded from. */
export interface ConfigSource {
  /** Command-line arguments (without the program name). */
  args: string[];
  /** Environment variables. */
  env: Record<string, string>;
  /**
   * Reads the config file.
   *
   * @default {Deno.readTextFileSync}
   */
  readFile?: (path: string) => string;
}

type Json = Record<string, unknown>;
type Layer = { source: "env" | "flag"; values: Map<string, unknown> };

/**
 * Loads and validates a config: merges the sources leaf by leaf, then parses the result with
 * `schema`, which applies defaults and transforms.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { loadConfig } from "./load.ts";
 *
 * const schema = z.object({ port: z.number().prefault(1), name: z.string().prefault("a") });
 * const config = loadConfig(schema, {
 *   args: ["--port=3"],
 *   env: { ZTNA_CONFIG: "/etc/ztna.json", ZTNA_PORT: "2" },
 *   readFile: () => '{"port": 1, "name": "from-file"}',
 * });
 * assert.deepEqual(config, { port: 3, name: "from-file" });
 * ```
 *
 * @param schema The component's config schema (a `z.object`).
 * @param source Arguments, environment and file reader.
 * @returns The parsed config.
 * @throws {ConfigError} Naming the first invalid field and the source that set it.
 */
export function loadConfig<T>(schema: z.ZodType<T>, source: ConfigSource): T {
  const { args, env, readFile = Deno.readTextFileSync } = source;
  const leaves = configLeaves(schema);
  const flags = parseFlags(args, leaves);

  const fromFlag = flags.configPath !== undefined;
  const configPath = fromFlag ? flags.configPath : env.ZTNA_CONFIG;
  const file = configPath === undefined
    ? {}
    : readConfigFile(configPath, fromFlag ? "flag" : "env", readFile);

  const layers: Layer[] = [
    { source: "env", values: readEnvValues(env, leaves) },
    { source: "flag", values: flags.values },
  ];
  const merged = structuredClone(file);
  const byName = new Map(leaves.map((leaf) => [leaf.name, leaf]));
  for (const layer of layers) {
    for (const [name, value] of layer.values) {
      setPath(merged, byName.get(name)!.path, value);
    }
  }

  const result = schema.safeParse(merged);
  if (result.success) return result.data;
  throw toConfigError(result.error.issues, { file, merged, layers, leaves });
}

/**
 * Like {@linkcode loadConfig}, but on a {@linkcode ConfigError} prints one line to stderr,
 * `ztna <component>: invalid config: <field> (from <source>): <message>`, and exits with code 2,
 * so nothing binds with a bad config.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadConfigOrExit } from "./load.ts";
 * import { relayConfigSchema } from "./relay.ts";
 *
 * // A component passes nothing and reads this process's flags and ZTNA_* variables.
 * const config = loadConfigOrExit(relayConfigSchema, "relay", {
 *   args: ["--tls.cert=relay.pem", "--tls.key=relay.key", "--listen=127.0.0.1:0"],
 *   env: { ZTNA_TLS_CA: "ca.pem" },
 * });
 * assert.deepEqual(config.listen, { host: "127.0.0.1", port: 0 });
 * assert.equal(config.tls.ca, "ca.pem");
 * ```
 *
 * @param schema The component's config schema.
 * @param component Component name for the error line, e.g. `"relay"`.
 * @param source Arguments, environment and file reader.
 * @returns The parsed config.
 */
export function loadConfigOrExit<T>(
  schema: z.ZodType<T>,
  component: string,
  source: ConfigSource = processConfigSource(schema),
): T {
  try {
    return loadConfig(schema, source);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`ztna ${component}: invalid config: ${error.message}`);
    Deno.exit(2);
  }
}

function readConfigFile(
  path: string,
  source: ConfigSourceKind,
  readFile: (path: string) => string,
): Json {
  let text: string;
  try {
    text = readFile(path);
  } catch (error) {
    throw new ConfigError("config", source, `cannot read config file ${path}: ${reason(error)}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(
      "config",
      source,
      `config file ${path} is not valid JSON: ${reason(error)}`,
    );
  }
  if (!isObject(data)) {
    throw new ConfigError("config", source, `config file ${path} must hold a JSON object`);
  }
  return data;
}

/** Sets `value` at `path`, replacing whatever non-object stood in the way. */
function setPath(target: Json, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (!isObject(node[key])) node[key] = {};
    node = node[key] as Json;
  }
  node[path[path.length - 1]] = value;
}

interface ErrorContext {
  file: Json;
  merged: Json;
  layers: Layer[];
  leaves: ConfigLeaf[];
}

function toConfigError(issues: readonly z.core.$ZodIssue[], context: ErrorContext): ConfigError {
  const issue = issues[0];
  let path: PropertyKey[] = [...issue.path];
  let detail = issue.message;
  let missing = false;

  if (issue.code === "unrecognized_keys") {
    path = [...path, issue.keys[0]];
    detail = issue.keys.length > 1
      ? `unknown key (also unknown here: ${issue.keys.slice(1).join(", ")})`
      : "unknown key";
  } else if (issue.code === "invalid_key") {
    detail = issue.issues[0]?.message ?? detail;
  } else if (issue.code === "invalid_type" && valueAt(context.merged, path) === undefined) {
    missing = true;
    // Name the first missing leaf rather than an absent parent object like `tls`.
    const prefix = path.join(".");
    const leaf = context.leaves.find((l) =>
      l.required && (l.name === prefix || l.name.startsWith(`${prefix}.`))
    );
    if (leaf && path.every((segment) => typeof segment === "string")) {
      path = [...leaf.path];
      detail = `required: set it in the config file, ${leaf.env} or --${leaf.name}`;
    } else {
      detail = "required";
    }
  }

  const more = issues.length - 1;
  if (more > 0) detail += ` (and ${more} more problem${more === 1 ? "" : "s"})`;
  return new ConfigError(formatPath(path), sourceOf(path, missing, context), detail);
}

/**
 * The source that set the value at `path`: the highest layer that set it or an enclosing leaf
 * (e.g. `--services` for `services.echo.agents[0]`); `default` when nothing set a missing value.
 */
function sourceOf(
  path: readonly PropertyKey[],
  missing: boolean,
  context: ErrorContext,
): ConfigSourceKind {
  for (const layer of [...context.layers].reverse()) {
    for (let length = path.length; length > 0; length--) {
      if (layer.values.has(path.slice(0, length).join("."))) return layer.source;
    }
  }
  if (missing) return "default";
  for (let length = path.length; length > 0; length--) {
    if (valueAt(context.file, path.slice(0, length)) !== undefined) return "file";
  }
  return "default";
}

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let node = data;
  for (const key of path) {
    if (node === null || typeof node !== "object" || !Object.hasOwn(node, key)) return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** Formats a path as `services.echo.agents[0]`, quoting keys that are not plain names. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const segment of path) {
    if (typeof segment === "number") out += `[${segment}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(String(segment))) {
      out += out === "" ? String(segment) : `.${String(segment)}`;
    } else out += `[${JSON.stringify(String(segment))}]`;
  }
  return out === "" ? "(root)" : out;
}

function isObject(value: unknown): value is Json {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The names of the environment variables a schema reads: `ZTNA_CONFIG` plus one per leaf.
 * Permission scopes (`--allow-env=...`) are built from this list.
 */
export function configEnvNames(schema: z.ZodType): string[] {
  return ["ZTNA_CONFIG", ...configLeaves(schema).map((leaf) => leaf.env)];
}

/**
 * This process's arguments and the `ZTNA_*` variables `schema` reads. Variables are read one
 * by one so the process needs `--allow-env` for exactly those names, not the whole environment.
 */
export function processConfigSource(schema: z.ZodType): ConfigSource {
  const env: Record<string, string> = {};
  for (const name of configEnvNames(schema)) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return { args: Deno.args, env };
}
