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
import { auditFilePaths } from "../shared/audit_log.ts";
import { isIpLiteral } from "../shared/resolve_host.ts";
import { libcPath } from "../shared/quic/libc.ts";
import { backendBindAddress, type InterfaceInfo } from "../connector/bind_address.ts";

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

/**
 * The libc the batched UDP socket calls (shared/quic/libc.ts), unless the config asks for the
 * portable socket or the host has no batched socket: exactly that file, nothing more of FFI.
 */
function udpLibc(config: ComponentConfig): string[] {
  const path = config.udp.socket === "portable" ? null : libcPath();
  return path === null ? [] : [path];
}

// A dialing socket binds the unspecified address of the peer's family.
const bindFor = (host: string) => (host.includes(":") ? "[::]:0" : "0.0.0.0:0");

/**
 * The `--allow-*` flags for `component` running with `config` (read from `configPath`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { connectorConfigSchema } from "../shared/config/mod.ts";
 * import { permissionFlags } from "./permissions.ts";
 *
 * const config = connectorConfigSchema.parse({
 *   relays: ["127.0.0.1:4433"],
 *   tls: { cert: "c.pem", key: "k.pem", ca: "ca.pem" },
 *   services: { dns: "udp://127.0.0.1:53" },
 * });
 * const flags = permissionFlags("connector", config, "/etc/ztna/connector.json", new Map(), () => []);
 * // The relay, the dialing socket, the metrics listener, the backend and its socket's bind:
 * assert.equal(flags[0], "--allow-net=127.0.0.1:4433,0.0.0.0:0,127.0.0.1:9091,127.0.0.1:53,127.0.0.1:0");
 * assert.equal(flags[1], "--allow-read=/etc/ztna/connector.json,c.pem,k.pem,ca.pem");
 * ```
 *
 * @param component The component.
 * @param config Its parsed config.
 * @param configPath The config file it reads, if any.
 * @param resolved Addresses of the host names it dials, looked up at launch.
 * @param interfaces The host's interface addresses (connector backend binds).
 * @returns The flags, `--allow-net` first, then `--allow-read`.
 */
export function permissionFlags(
  component: Component,
  config: ComponentConfig,
  configPath: string | null,
  resolved: ReadonlyMap<string, string[]> = new Map(),
  interfaces?: () => InterfaceInfo[],
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
  // The audit files (live and rotated): written, and read by the rename of a rotation.
  const audit = config.audit.destination === "file" && config.audit.file !== undefined
    ? auditFilePaths(config.audit.file, config.audit.keep)
    : [];
  reads.push(...audit);
  const flags = [
    ...(audit.length > 0 ? [`--allow-write=${audit.join(",")}`] : []),
    `--allow-read=${[...new Set(reads)].join(",")}`,
    `--allow-env=${[...new Set(envNames)].join(",")}`,
    `--allow-ffi=${[quicAddonDir(), ...udpLibc(config)].join(",")}`,
  ];
  const net = new Set<string>();
  // Deno checks the literal address a socket sends to, so a relay's name is granted as itself
  // (for the lookup, which needs the bare name) plus each address it resolved to at launch.
  const add = (address: HostPort) => {
    net.add(formatHostPort(address));
    if (isIpLiteral(address.host)) return;
    net.add(address.host);
    for (const ip of resolved.get(address.host) ?? []) {
      net.add(formatHostPort({ host: ip, port: address.port }));
      net.add(bindFor(ip));
    }
  };
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
    // A backend is granted its exact host:port, never a bare host (that is every port). A
    // name is not looked up by the connector (see backendHosts): it sends to the addresses
    // resolved here, from the local address routed towards each (connector/bind_address.ts).
    const connector = config as ConnectorConfig;
    flags.push("--allow-sys=networkInterfaces");
    for (const urls of Object.values(connector.services)) {
      for (const url of urls) {
        net.add(formatHostPort(url));
        const ips = isIpLiteral(url.host)
          ? [url.host]
          : connector.hosts[url.host] ?? resolved.get(url.host) ?? [];
        for (const ip of ips) {
          net.add(formatHostPort({ host: ip, port: url.port }));
          net.add(formatHostPort({ host: backendBindAddress(ip, interfaces).address, port: 0 }));
        }
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

/**
 * The connector's `hosts` for the backend names `resolved` at launch that its config does
 * not already map, or null when there are none.
 */
export function backendHosts(
  config: ConnectorConfig,
  resolved: ReadonlyMap<string, string[]>,
): Record<string, string[]> | null {
  const hosts: Record<string, string[]> = {};
  for (const urls of Object.values(config.services)) {
    for (const { host } of urls) {
      const ips = resolved.get(host) ?? [];
      if (isIpLiteral(host) || config.hosts[host] !== undefined || ips.length === 0) continue;
      hosts[host] = ips;
    }
  }
  return Object.keys(hosts).length === 0 ? null : hosts;
}

/** Host names (not IP literals) the component dials: relays and backends. */
export function dialedNames(component: Component, config: ComponentConfig): string[] {
  if (component === "relay") return [];
  const hosts = (config as ConnectorConfig | AgentConfig).relays.map((relay) => relay.host);
  if (component === "connector") {
    for (const urls of Object.values((config as ConnectorConfig).services)) {
      hosts.push(...urls.map((url) => url.host));
    }
  }
  return [...new Set(hosts.filter((host) => !isIpLiteral(host)))];
}

/**
 * Resolves `names` in a child process allowed to look up exactly those names (this process
 * needs `--allow-run` for the deno binary). Unresolvable names map to [].
 */
export async function resolveNames(names: string[]): Promise<Map<string, string[]>> {
  if (names.length === 0) return new Map();
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      `--config=${join(PROJECT_ROOT, "deno.json")}`,
      `--allow-net=${names.join(",")}`,
      join(PROJECT_ROOT, "tools", "resolve.ts"),
      ...names,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!output.success) return new Map(names.map((name) => [name, []]));
  return new Map(Object.entries(JSON.parse(new TextDecoder().decode(output.stdout))));
}

/** The full `deno run` argument list (after the deno binary) for a component. */
export function runArgs(
  component: Component,
  config: ComponentConfig,
  configPath: string | null,
  componentArgs: string[],
  resolved: ReadonlyMap<string, string[]> = new Map(),
): string[] {
  // The connector sends to the backend addresses resolved here: it is told them as `hosts`.
  const hosts = component === "connector"
    ? backendHosts(config as ConnectorConfig, resolved)
    : null;
  const merged = hosts === null
    ? []
    : [`--hosts=${JSON.stringify({ ...(config as ConnectorConfig).hosts, ...hosts })}`];
  return [
    "run",
    "--no-prompt",
    `--config=${join(PROJECT_ROOT, "deno.json")}`,
    ...permissionFlags(component, config, configPath, resolved),
    join(PROJECT_ROOT, component, "main.ts"),
    ...componentArgs,
    ...merged,
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

/**
 * Loads a component's config from these arguments and this process's `ZTNA_*` variables, or
 * exits 2 with the same message the component itself would print.
 */
export function loadComponentConfigOrExit(
  component: Component,
  args: string[],
): { config: ComponentConfig; configPath: string | null } {
  try {
    return loadComponentConfig(component, args, componentEnv(component));
  } catch (error) {
    console.error(`ztna ${component}: invalid config: ${(error as Error).message}`);
    Deno.exit(2);
  }
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
  const loaded = loadComponentConfigOrExit(component, args);
  const quote = (arg: string) =>
    /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
  const resolved = await resolveNames(dialedNames(component, loaded.config));
  const line = runArgs(component, loaded.config, loaded.configPath, args, resolved);
  console.log(["deno", ...line].map(quote).join(" "));
}
