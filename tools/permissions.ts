/**
 * Derives the exact Deno permission flags a component needs from its config, so the
 * sandbox and the config have one source of truth.
 *
 * Usage: `deno task permissions <relay|connector|agent> --config FILE` prints the
 * `deno run ...` line that starts the component with nothing more than it needs.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { z } from "zod";
import {
  type AgentConfig,
  agentConfigSchema,
  configEnvNames,
  type ConnectorConfig,
  connectorConfigSchema,
  formatHostPort,
  type HostPort,
  loadConfig,
  type RelayConfig,
  relayConfigSchema,
} from "../shared/config/mod.ts";

/** The three components. */
export type Component = "relay" | "connector" | "agent";

/** The project root (where deno.json and node_modules live). */
export const PROJECT_ROOT: string = dirname(dirname(fileURLToPath(import.meta.url)));

/** The config schema of each component. */
export const schemas = {
  relay: relayConfigSchema,
  connector: connectorConfigSchema,
  agent: agentConfigSchema,
} as const;

/** A component's parsed config. */
export type ComponentConfig = RelayConfig | ConnectorConfig | AgentConfig;

/**
 * The folder holding quiche's native addon: the only thing `--allow-ffi` must reach.
 * Falls back to the whole `node_modules` when the platform package is not installed yet.
 */
export function quicAddonDir(root: string = PROJECT_ROOT): string {
  const store = join(root, "node_modules", ".deno");
  try {
    for (const entry of Deno.readDirSync(store)) {
      if (entry.isDirectory && /^@matrixai\+quic-(linux|darwin|win32)-/.test(entry.name)) {
        return join(store, entry.name);
      }
    }
  } catch {
    // No node_modules yet (first run): the broader scope still loads the addon.
  }
  return join(root, "node_modules");
}

// A dialing socket binds the unspecified address of the peer's family.
const bindFor = (host: string) => (host.includes(":") ? "[::]:0" : "0.0.0.0:0");

/**
 * The `--allow-*` flags for `component` running with `config` (read from `configPath`).
 *
 * @example
 * ```ts ignore
 * const flags = permissionFlags("connector", config, "/etc/ztna/connector.json");
 * // ["--allow-net=relay.example.com:4433,0.0.0.0:0,10.0.0.5:53,127.0.0.1:9091", ...]
 * ```
 */
export function permissionFlags(
  component: Component,
  config: ComponentConfig,
  configPath: string | null,
): string[] {
  const reads = [config.tls.cert, config.tls.key, config.tls.ca]
    .filter((path): path is string => path !== undefined);
  if (configPath !== null) reads.unshift(configPath);
  const envNames = configEnvNames(schemas[component]);
  // Secret references are read by the component itself: exactly that variable or file.
  for (const ref of secretRefs(component, config)) {
    if (ref.startsWith("env:")) envNames.push(ref.slice(4));
    else if (ref.startsWith("file:")) reads.push(ref.slice(5));
  }
  const flags = [
    `--allow-read=${[...new Set(reads)].join(",")}`,
    `--allow-env=${[...new Set(envNames)].join(",")}`,
    `--allow-ffi=${quicAddonDir()}`,
  ];
  const net = new Set<string>();
  const add = (address: HostPort) => net.add(formatHostPort(address));
  if (component === "relay") {
    // Peers dial in from anywhere: the relay's network scope cannot be narrowed.
    flags.unshift("--allow-net");
    return flags;
  }
  const dialer = config as ConnectorConfig | AgentConfig;
  for (const relay of dialer.relays) {
    add(relay);
    net.add(bindFor(relay.host));
  }
  if (dialer.metrics !== null) add(dialer.metrics);
  if (component === "connector") {
    for (const urls of Object.values((config as ConnectorConfig).services)) {
      for (const url of urls) {
        add(url);
        net.add(bindFor(url.host));
      }
    }
  } else {
    // Replies go to whichever local port an application sent from: the whole listen host.
    for (const forward of (config as AgentConfig).forwards) {
      net.add(forward.listen.host.includes(":") ? `[${forward.listen.host}]` : forward.listen.host);
    }
  }
  flags.unshift(`--allow-net=${[...net].join(",")}`);
  return flags;
}

/** The secret references (`env:NAME`, `file:/path`) a component's config resolves. */
export function secretRefs(component: Component, config: ComponentConfig): string[] {
  if (component === "relay") {
    return Object.values((config as RelayConfig).tokens).flatMap((entries) =>
      entries.map((entry) => entry.ref).filter((ref) => !ref.startsWith("sha256:"))
    );
  }
  const token = (config as ConnectorConfig | AgentConfig).token;
  return token === undefined ? [] : [token.ref];
}

/** The full `deno run` argument list (after the deno binary) for a component. */
export function runArgs(
  component: Component,
  config: ComponentConfig,
  configPath: string | null,
  componentArgs: string[],
): string[] {
  return [
    "run",
    "--no-prompt",
    `--config=${join(PROJECT_ROOT, "deno.json")}`,
    ...permissionFlags(component, config, configPath),
    join(PROJECT_ROOT, component, "main.ts"),
    ...componentArgs,
  ];
}

/** Loads a component's config the way the component will (args, then `ZTNA_*`). */
export function loadComponentConfig(
  component: Component,
  args: string[],
  env: Record<string, string>,
): { config: ComponentConfig; configPath: string | null } {
  const schema = schemas[component] as unknown as z.ZodType<ComponentConfig>;
  const config = loadConfig(schema, { args, env });
  const flagIndex = args.findIndex((a) => a === "--config" || a.startsWith("--config="));
  const configPath = flagIndex < 0
    ? env.ZTNA_CONFIG ?? null
    : args[flagIndex].startsWith("--config=")
    ? args[flagIndex].slice("--config=".length)
    : args[flagIndex + 1];
  return { config, configPath };
}

/** Reads the `ZTNA_*` variables a component's schema uses from this process. */
export function componentEnv(component: Component): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of configEnvNames(schemas[component])) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** Parses `<component>` from the first argument or exits 2 with the usage. */
export function componentArg(args: string[], usage: string): Component {
  const component = args[0];
  if (component !== "relay" && component !== "connector" && component !== "agent") {
    console.error(usage);
    Deno.exit(2);
  }
  return component;
}

if (import.meta.main) {
  const usage = "usage: deno task permissions <relay|connector|agent> --config FILE";
  const component = componentArg(Deno.args, usage);
  const args = Deno.args.slice(1);
  let loaded;
  try {
    loaded = loadComponentConfig(component, args, componentEnv(component));
  } catch (error) {
    console.error(`ztna ${component}: invalid config: ${(error as Error).message}`);
    Deno.exit(2);
  }
  const quote = (arg: string) =>
    /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
  console.log(
    ["deno", ...runArgs(component, loaded.config, loaded.configPath, args)].map(quote).join(" "),
  );
}
