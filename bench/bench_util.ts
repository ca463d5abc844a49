/**
 * Shared pieces of the benchmarks: a tunnel with any mix of UDP and TCP forwards (built on
 * the test harness), `/proc` readings (CPU time, RSS), percentiles, external peer processes
 * (iperf3, nginx, stunnel) that are always killed, and the result file each bench writes.
 *
 * Benchmarks are never part of the test suite; each runs as `deno task bench:<name>`.
 *
 * @module
 */
import { join } from "node:path";
import { type ComponentProcess, portOf, spawnLogged } from "../test/_support/harness.ts";
import { startTrio, type Trio } from "../test/_support/trio.ts";
import { waitFor } from "../test/_support/wait.ts";
import {
  type Component,
  loadComponentConfig,
  PROJECT_ROOT,
  runArgs,
} from "../tools/permissions.ts";

/** Kernel clock ticks per second for `/proc/<pid>/stat` (USER_HZ; 100 on Linux x86). */
const CLOCK_TICKS = 100;

/** CPU seconds (user + system) a process has used so far. */
export function cpuSeconds(pid: number | "self"): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** Resident set size of a process in bytes. */
export function rssBytes(pid: number | "self"): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  return match === null ? 0 : Number(match[1]) * 1024;
}

/** The `p`-th percentile (0..100) of `values` (sorted in place), or NaN when empty. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  values.sort((a, b) => a - b);
  const index = Math.min(values.length - 1, Math.ceil((p / 100) * values.length) - 1);
  return values[Math.max(0, index)];
}

/** Median of `values` (sorted in place). */
export const median = (values: number[]): number => percentile(values, 50);

/** Rounds for display: 3 significant digits, at most 3 decimals. */
export function round(value: number): number {
  if (!Number.isFinite(value)) return value;
  const digits = Math.max(0, Math.min(3, 2 - Math.floor(Math.log10(Math.abs(value) || 1))));
  return Number(value.toFixed(digits));
}

/** Sleeps `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The machine a figure was taken on, printed with every result. */
export function machine(): Record<string, unknown> {
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  return {
    date: new Date().toISOString(),
    nproc: navigator.hardwareConcurrency,
    cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown",
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    loadavg: Deno.loadavg().map((l) => Number(l.toFixed(2))),
  };
}

/** Writes `.state/bench/<name>.json` and prints the result as one JSON line. */
export async function writeResult(name: string, result: Record<string, unknown>): Promise<void> {
  const dir = join(PROJECT_ROOT, ".state", "bench");
  await Deno.mkdir(dir, { recursive: true });
  const full = { bench: name, machine: machine(), ...result };
  await Deno.writeTextFile(join(dir, `${name}.json`), JSON.stringify(full, null, 2) + "\n");
  console.log(JSON.stringify(full));
}

/** Prints a progress line to stderr (stdout carries only the result). */
export function progress(...parts: unknown[]): void {
  console.error("[bench]", ...parts.map((p) => typeof p === "string" ? p : JSON.stringify(p)));
}

/** A free loopback port (the test suite's one helper). */
export { freePort } from "../test/_support/ports.ts";

/** An external program (peer) that the bench owns and always kills. */
export interface PeerProcess {
  readonly pid: number;
  readonly status: Promise<Deno.CommandStatus>;
  /** Output collected so far (stdout then stderr). */
  output(): Promise<string>;
  /** SIGTERM, then SIGKILL after `ms`; resolves once exited. */
  kill(ms?: number): Promise<void>;
}

/** Starts `command args`; its output is collected for {@linkcode PeerProcess.output}. */
export function startPeer(command: string, args: string[]): PeerProcess {
  const child = new Deno.Command(command, {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const collected = child.output().then((o) =>
    new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr)
  );
  const status = collected.then(() => child.status);
  let exited = false;
  status.then(() => exited = true);
  return {
    pid: child.pid,
    status,
    output: () => collected,
    async kill(ms = 3000) {
      if (exited) return;
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }, ms);
      await status;
      clearTimeout(timer);
    },
  };
}

/** Runs `command args` to completion (bounded by `ms`) and returns its stdout. */
export async function runPeer(command: string, args: string[], ms = 60_000): Promise<string> {
  const peer = startPeer(command, args);
  const timer = setTimeout(() => peer.kill(), ms);
  const status = await peer.status;
  clearTimeout(timer);
  const output = await peer.output();
  if (!status.success) throw new Error(`${command} ${args.join(" ")} failed: ${output}`);
  return output;
}

/**
 * Like the harness's `startComponent` (same sandbox flags), with `extraFlags` added to
 * `deno run`: the benchmarks profile components through `--inspect`.
 */
export async function startComponentWith(
  component: Component,
  config: Record<string, unknown>,
  extraFlags: string[] = [],
): Promise<ComponentProcess> {
  const configPath = await Deno.makeTempFile({ prefix: `ztna-${component}-`, suffix: ".json" });
  await Deno.writeTextFile(configPath, JSON.stringify(config));
  const componentArgs = ["--config", configPath];
  const { config: parsed } = loadComponentConfig(component, componentArgs, {});
  const [run, ...rest] = runArgs(component, parsed, configPath, componentArgs);
  const proc = await spawnLogged(component, [run, ...extraFlags, ...rest]);
  return { ...proc, configPath };
}

/** Options for {@linkcode startBenchTunnel}. */
export interface BenchTunnelOptions {
  /** Services by name: the connector's backend URLs (`udp://…`, `tcp://…`). */
  services: Record<string, string[]>;
  /** The agent's forwards: listen URL → service. */
  forwards: { listen: string; service: string }[];
  /** Extra relay `limits` (merged over the defaults). */
  limits?: Record<string, number>;
  /** Extra connector `limits` (merged over the defaults). */
  connectorLimits?: Record<string, number>;
  /** Relay listen address (default ephemeral). */
  relayListen?: string;
  /** Extra agent identities the policy allows (their certificates are created). */
  extraAgents?: string[];
  /** Connector and agent reconnect backoff (default: the components' defaults). */
  reconnect?: { base_ms: number; max_ms: number };
  /** Extra `deno run` flags per component (e.g. `--inspect=127.0.0.1:0` to profile it). */
  flags?: Partial<Record<Component, string[]>>;
  /** The UDP socket kind of all three components (config `udp.socket`; default `auto`). */
  udpSocket?: "auto" | "batched" | "portable";
}

/** A relay, connector and agent started for a benchmark. */
export type BenchTunnel = Trio;

/** Starts a relay + connector + agent on loopback with the given services and forwards. */
export async function startBenchTunnel(options: BenchTunnelOptions): Promise<BenchTunnel> {
  const { limits = {}, extraAgents = [], flags = {} } = options;
  // Readiness is an info line, so every component logs at info.
  const udp = { socket: options.udpSocket ?? "auto" };
  const dialer = {
    log_level: "info",
    udp,
    ...(options.reconnect ? { reconnect: options.reconnect } : {}),
  };
  return await startTrio({
    backends: options.services,
    forwards: options.forwards,
    agents: ["agent-1", ...extraAgents],
    relay: {
      ...(options.relayListen ? { listen: options.relayListen } : {}),
      log_level: "info",
      udp,
      limits,
    },
    connector: { ...dialer, limits: options.connectorLimits ?? {} },
    agent: dialer,
    start: (component, config) => startComponentWith(component, config, flags[component] ?? []),
    stopTimeoutMs: 8000,
  });
}

/** The port of an agent listen URL such as `udp://127.0.0.1:5353`. */
export const listenPort = (url: string): number => portOf(url);

/** Waits until `pid` has exited (bounded); true when it did. */
export async function waitExited(pid: number, ms = 5000): Promise<boolean> {
  try {
    await waitFor(`pid ${pid} to exit`, () => {
      try {
        Deno.statSync(`/proc/${pid}`);
        return false;
      } catch {
        return true;
      }
    }, ms);
    return true;
  } catch {
    return false;
  }
}
