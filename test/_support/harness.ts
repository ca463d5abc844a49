/**
 * End-to-end test harness: certificates, real component processes started in their
 * permission sandboxes (the same flags `deno task <component>` derives), metric scrapes,
 * UDP clients. Everything binds loopback and ephemeral ports. The relay/connector/agent trio
 * is in `_support/trio.ts`, the bounded wait in `_support/wait.ts`, free ports in
 * `_support/ports.ts`.
 *
 * @module
 */
import { join } from "node:path";
import {
  createCa,
  createClientCertificate,
  createRelayCertificate,
} from "../../shared/identity/dev_ca.ts";
import {
  type Component,
  loadComponentConfig,
  PROJECT_ROOT,
  runArgs,
} from "../../tools/permissions.ts";
import { readLines } from "../../tools/text_lines.ts";

/** A temporary folder with a dev CA and certificates for the given client names. */
export interface Pki {
  dir: string;
  tls(name: string): { cert: string; key: string; ca: string };
  /** TLS files of a client signed by a different CA. */
  strangerTls(name: string): Promise<{ cert: string; key: string; ca: string }>;
}

/** Creates a CA, the relay certificate and client certificates in a temp folder. */
export async function createPki(clients: string[]): Promise<Pki> {
  const dir = await Deno.makeTempDir({ prefix: "ztna-test-" });
  const ca = await createCa();
  await Deno.writeTextFile(join(dir, "ca.pem"), ca.cert);
  const write = async (name: string, pair: { cert: string; key: string }) => {
    await Deno.writeTextFile(join(dir, `${name}.pem`), pair.cert);
    await Deno.writeTextFile(join(dir, `${name}.key`), pair.key);
  };
  await write("relay", await createRelayCertificate(ca));
  for (const client of clients) await write(client, await createClientCertificate(ca, client));
  const tls = (name: string) => ({
    cert: join(dir, `${name}.pem`),
    key: join(dir, `${name}.key`),
    ca: join(dir, "ca.pem"),
  });
  return {
    dir,
    tls,
    async strangerTls(name) {
      const other = await createCa({ commonName: "some other CA" });
      await write(name, await createClientCertificate(other, name));
      return tls(name);
    },
  };
}

/** A running component process. */
export interface ComponentProcess {
  readonly name: string;
  /** Fields of its `ready` log line. */
  readonly ready: Record<string, unknown>;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  /** Every stderr line so far (runtime warnings, exit messages). */
  readonly stderr: string[];
  /** Resolves with the first log line matching, or rejects after `ms`. */
  waitForLog(
    match: (line: Record<string, unknown>) => boolean,
    ms?: number,
  ): Promise<Record<string, unknown>>;
  /** Sends a signal (default SIGTERM) and resolves with the exit code (bounded). */
  stop(signal?: Deno.Signal, ms?: number): Promise<number>;
  /** Sends a signal without waiting for anything (e.g. SIGHUP); ignored once exited. */
  signal(signal: Deno.Signal): void;
  readonly status: Promise<Deno.CommandStatus>;
  /** The child's process id (benchmarks read its CPU time and RSS from `/proc`). */
  readonly pid: number;
  /** The config file it was started with (set by {@linkcode startComponent}). */
  readonly configPath?: string;
}

/** Options for {@linkcode startComponent}. */
export interface StartOptions {
  /** Extra arguments after `--config FILE`. */
  args?: string[];
  /** Wait for the ready line (default true). */
  waitReady?: boolean;
  timeoutMs?: number;
  /** Extra environment variables (e.g. `OTEL_*`). */
  env?: Record<string, string>;
}

/**
 * Writes `config` to a temp file and starts the component with its derived permission
 * flags, exactly as the launcher would.
 */
export async function startComponent(
  component: Component,
  config: Record<string, unknown>,
  options: StartOptions = {},
): Promise<ComponentProcess> {
  const { args = [], waitReady = true, timeoutMs = 20_000, env } = options;
  const configPath = await Deno.makeTempFile({ prefix: `ztna-${component}-`, suffix: ".json" });
  await Deno.writeTextFile(configPath, JSON.stringify(config));
  const componentArgs = ["--config", configPath, ...args];
  const { config: parsed } = loadComponentConfig(component, componentArgs, {});
  const denoArgs = runArgs(component, parsed, configPath, componentArgs);
  // Profiling hook for performance work: ZTNA_CPU_PROF_DIR=/tmp/prof writes V8 CPU profiles.
  const profileDir = Deno.env.get("ZTNA_CPU_PROF_DIR");
  if (profileDir) denoArgs.splice(1, 0, "--cpu-prof", `--cpu-prof-dir=${profileDir}`);
  // ZTNA_V8_FLAGS=--max-old-space-size=40 runs the components with those V8 flags (the
  // soak uses it to tell V8's own memory growth from a leak).
  const v8Flags = Deno.env.get("ZTNA_V8_FLAGS");
  if (v8Flags) denoArgs.splice(1, 0, `--v8-flags=${v8Flags}`);
  const proc = await spawnLogged(component, denoArgs, {
    waitReady,
    timeoutMs,
    env,
  });
  return { ...proc, configPath };
}

/** Spawns `deno <args>` and follows its JSON log lines. */
export async function spawnLogged(
  name: string,
  args: string[],
  options: {
    waitReady?: boolean;
    timeoutMs?: number;
    readyMsg?: string;
    /** Extra environment variables for the child (e.g. a `ZTNA_*` override). */
    env?: Record<string, string>;
  } = {},
): Promise<ComponentProcess> {
  const { waitReady = true, timeoutMs = 20_000, readyMsg = "ready", env } = options;
  const child = new Deno.Command(Deno.execPath(), {
    args,
    env,
    cwd: PROJECT_ROOT,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const logs: Record<string, unknown>[] = [];
  const waiters: {
    match: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }[] = [];
  const stderr: string[] = [];
  // ZTNA_TEST_LOG=warn (or info, debug) echoes children's log lines at that level and above.
  const echoLevels = ["debug", "info", "warn", "error"];
  const echoFrom = echoLevels.indexOf(Deno.env.get("ZTNA_TEST_LOG") ?? "");
  const reading = (async () => {
    for await (const line of readLines(child.stdout)) {
      let fields: Record<string, unknown>;
      try {
        fields = JSON.parse(line);
      } catch {
        continue;
      }
      logs.push(fields);
      if (echoFrom >= 0 && echoLevels.indexOf(String(fields.level)) >= echoFrom) {
        console.error(`[${name}] ${line}`);
      }
      for (const waiter of [...waiters]) {
        if (waiter.match(fields)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(fields);
        }
      }
    }
  })();
  const readingErr = (async () => {
    for await (const line of readLines(child.stderr)) {
      if (!line.includes("npm warn")) stderr.push(line);
    }
  })();
  const status = child.status.then(async (s) => {
    await Promise.allSettled([reading, readingErr]);
    return s;
  });

  const waitForLog = (match: (l: Record<string, unknown>) => boolean, ms = 10_000) => {
    const found = logs.find(match);
    if (found) return Promise.resolve(found);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const waiter = {
        match,
        resolve: (l: Record<string, unknown>) => (clearTimeout(timer), resolve(l)),
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        reject(
          new Error(`${name}: no matching log line within ${ms} ms; stderr: ${stderr.join("\n")}`),
        );
      }, ms);
      waiters.push(waiter);
    });
  };

  let ready: Record<string, unknown> = {};
  if (waitReady) {
    const exited = status.then((s) => {
      throw new Error(`${name} exited with ${s.code} before ready: ${stderr.join("\n")}`);
    });
    exited.catch(() => {});
    try {
      ready = await Promise.race([waitForLog((l) => l.msg === readyMsg, timeoutMs), exited]);
    } catch (error) {
      // Never leave a child behind that nobody holds a handle to any more.
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await status;
      throw error;
    }
  }
  return {
    name,
    pid: child.pid,
    ready,
    logs,
    stderr,
    waitForLog,
    status,
    signal(signal) {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
    },
    async stop(signal = "SIGTERM", ms = 15_000) {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const result = await Promise.race([
        status.then((s) => s.code),
        new Promise<null>((r) => timer = setTimeout(() => r(null), ms)),
      ]);
      clearTimeout(timer);
      if (result === null) {
        child.kill("SIGKILL");
        await status;
        throw new Error(`${name} did not exit within ${ms} ms of ${signal}`);
      }
      return result;
    },
  };
}

/** Starts the demo UDP echo service as a process; resolves with its port. */
export async function startEchoService(
  host = "127.0.0.1",
): Promise<{ port: number; proc: ComponentProcess }> {
  const proc = await spawnLogged("echo", [
    "run",
    "--no-prompt",
    `--config=${join(PROJECT_ROOT, "deno.json")}`,
    `--allow-net=${host}`,
    join(PROJECT_ROOT, "tools", "echo_service.ts"),
    `${host}:0`,
  ], { readyMsg: "echo service ready" });
  return { port: Number(String(proc.ready.udp).split(":").pop()), proc };
}

/** Fetches `/metrics` and returns samples keyed `name{labels}` (labels as printed). */
export async function scrape(address: string): Promise<Map<string, number>> {
  const response = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await response.text();
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

/** A metric's value from a scrape (0 when absent). */
export function metric(samples: Map<string, number>, key: string): number {
  return samples.get(key) ?? 0;
}

/** A UDP client socket bound on loopback, with receive timeouts. */
export interface UdpClient {
  readonly port: number;
  send(data: Uint8Array, port: number, host?: string): Promise<void>;
  /** The next datagram, or null after `ms`. */
  receive(ms?: number): Promise<Uint8Array | null>;
  close(): void;
}

/** Binds a UDP client on `host` (default 127.0.0.1). */
export function udpClient(host = "127.0.0.1"): UdpClient {
  const conn = Deno.listenDatagram({ transport: "udp", hostname: host, port: 0 });
  let pending: Promise<[Uint8Array, Deno.Addr]> | null = null;
  return {
    port: (conn.addr as Deno.NetAddr).port,
    async send(data, port, to = "127.0.0.1") {
      await conn.send(data, { transport: "udp", hostname: to, port });
    },
    async receive(ms = 2000) {
      pending ??= conn.receive();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const result = await Promise.race([
        pending,
        new Promise<null>((r) => timer = setTimeout(() => r(null), ms)),
      ]);
      clearTimeout(timer);
      if (result === null) return null;
      pending = null;
      return result[0].slice();
    },
    close() {
      pending?.catch(() => {});
      conn.close();
    },
  };
}

/** Port of a `host:port` or `udp://host:port` string. */
export function portOf(address: unknown): number {
  return Number(String(address).split(":").pop());
}
