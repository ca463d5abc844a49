/**
 * Helpers for the TCP end-to-end tests: a relay + connector + agent trio around TCP
 * services, loopback TCP backends, resident-memory sampling and bounded socket I/O.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  type ComponentProcess,
  metric,
  type Pki,
  portOf,
  scrape,
  startEchoService,
} from "./harness.ts";
import { startTrio, type Trio, type TrioOptions } from "./trio.ts";

/** A running relay + connector + agent carrying TCP services. */
export interface TcpTunnel extends AsyncDisposable {
  pki: Pki;
  relay: ComponentProcess;
  connector: ComponentProcess;
  agent: ComponentProcess;
  /** The agent's local TCP port per service. */
  ports: Record<string, number>;
  stop(): Promise<void>;
}

/** Options for {@linkcode startTcpTunnel}. */
export interface TcpTunnelOptions {
  /** Backend port per service name (served as `tcp://127.0.0.1:<port>`). */
  backends: Record<string, number>;
  /** Services the agent forwards although no connector serves them and policy omits them. */
  unservedForwards?: string[];
  /** The connector's circuit breaker settings. */
  circuit?: { failures: number; reset_ms: number };
  connectorLogLevel?: "debug" | "info";
}

/** Starts relay, connector and one agent with a `tcp://127.0.0.1:0` forward per service. */
export async function startTcpTunnel(options: TcpTunnelOptions): Promise<TcpTunnel> {
  const names = Object.keys(options.backends);
  const forwarded = [...names, ...options.unservedForwards ?? []];
  const trio = await startTrio({
    backends: Object.fromEntries(
      names.map((name) => [name, `tcp://127.0.0.1:${options.backends[name]}`]),
    ),
    forwards: forwarded.map((service) => ({ listen: "tcp://127.0.0.1:0", service })),
    connector: {
      ...(options.circuit ? { circuit: options.circuit } : {}),
      log_level: options.connectorLogLevel ?? "info",
    },
  });
  // TCP forwards are listed in config order.
  const ports = Object.fromEntries(forwarded.map((name, i) => [name, portOf(trio.listen[i])]));
  return { ...trio, ports };
}

/**
 * Starts the demo UDP echo service (`echo`), a TCP echo backend (`tcpecho`) and a trio around
 * both, the agent forwarding `udp://` then `tcp://` in that order; `options` adds the rest.
 * The backends stop with the trio; `backendPorts` says where they listen.
 */
export async function startEchoTrio(
  options: Omit<TrioOptions, "backends" | "forwards"> = {},
): Promise<Trio & { backendPorts: { echo: number; tcpecho: number } }> {
  const echo = await startEchoService();
  const tcpBackend = startTcpServer(echoTcp);
  const trio = await startTrio({
    ...options,
    backends: {
      echo: `udp://127.0.0.1:${echo.port}`,
      tcpecho: `tcp://127.0.0.1:${tcpBackend.port}`,
    },
    forwards: [
      { listen: "udp://127.0.0.1:0", service: "echo" },
      { listen: "tcp://127.0.0.1:0", service: "tcpecho" },
    ],
    processes: [echo.proc, ...options.processes ?? []],
    cleanups: [() => tcpBackend.close(), ...options.cleanups ?? []],
  });
  return Object.assign(trio, { backendPorts: { echo: echo.port, tcpecho: tcpBackend.port } });
}

/** Deterministic test bytes: a 65,521-byte block (prime, so it never aligns with buffers). */
export function patternBlock(seed = 1): Uint8Array {
  const block = new Uint8Array(65_521);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < block.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    block[i] = state & 0xff;
  }
  return block;
}

/** Calls `emit` with consecutive slices of the repeated block until `total` bytes. */
export function* patternChunks(total: number, seed = 1): Generator<Uint8Array> {
  const block = patternBlock(seed);
  let offset = 0;
  while (offset < total) {
    const chunk = block.subarray(0, Math.min(block.length, total - offset));
    offset += chunk.length;
    yield chunk;
  }
}

/** SHA-256 (hex) of the first `total` pattern bytes. */
export function patternSha256(total: number, seed = 1): string {
  const hash = createHash("sha256");
  for (const chunk of patternChunks(total, seed)) hash.update(chunk);
  return hash.digest("hex");
}

/** Writes every byte of `data`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  while (data.length > 0) data = data.subarray(await conn.write(data));
}

/** Reads until EOF (or `limit` bytes), rejecting after `ms`. */
export async function readAll(conn: Deno.Conn, ms = 10_000, limit = 1 << 24): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(65_536);
  const deadline = Date.now() + ms;
  while (total < limit) {
    const n = await withTimeout(conn.read(buffer), deadline - Date.now(), "read");
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Resolves like `promise`, or rejects after `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Samples `process_resident_memory_bytes` of some processes every `everyMs` until stopped. */
export function sampleRss(
  procs: ComponentProcess[],
  everyMs = 200,
): { stop(): Promise<Record<string, { first: number; peak: number }>> } {
  const figures: Record<string, { first: number; peak: number }> = {};
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const proc of procs) {
        try {
          const rss = metric(
            await scrape(String(proc.ready.metrics)),
            "process_resident_memory_bytes",
          );
          const f = figures[proc.name] ??= { first: rss, peak: rss };
          f.peak = Math.max(f.peak, rss);
        } catch {
          // A scrape that fails under load is skipped; the next one counts.
        }
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return figures;
    },
  };
}

/** Megabytes with one decimal, for test output. */
export const mib = (bytes: number): string => `${(bytes / 1048576).toFixed(1)} MiB`;

/**
 * Reads `conn` to its end, hashing what arrives; `onProgress` sees the running byte count
 * after each read (and may pause the reader by returning a promise).
 */
export async function readHashed(
  conn: Deno.Conn,
  onProgress?: (total: number) => unknown,
): Promise<{ total: number; sha256: string }> {
  const hash = createHash("sha256");
  const buffer = new Uint8Array(65_536);
  let total = 0;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    hash.update(buffer.subarray(0, n));
    total += n;
    await onProgress?.(total);
  }
  return { total, sha256: hash.digest("hex") };
}

/** A {@linkcode startTcpServer} handler: every byte back, then a FIN after the client's FIN. */
export async function echoTcp(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(65_536);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    await writeAll(conn, buffer.subarray(0, n));
  }
  await conn.closeWrite();
}

/** Raw TCP server; each connection is handled by `handle` and closed after it. */
export function startTcpServer(
  handle: (conn: Deno.TcpConn) => Promise<void>,
): { port: number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      const done = handle(conn).catch(() => {}).finally(() => {
        try {
          conn.close();
        } catch {
          // Closed by the handler.
        }
        conns.delete(done);
      });
      conns.add(done);
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      await loop.catch(() => {});
      await Promise.allSettled([...conns]);
    },
  };
}

/** Connects to an echoing TCP forward and checks one round trip. */
export async function connectAndPing(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const ping = new TextEncoder().encode("ping");
  await writeAll(conn, ping);
  const echoed = new Uint8Array(4);
  let got = 0;
  while (got < 4) {
    const n = await withTimeout(conn.read(echoed.subarray(got)), 5000, "the echo");
    assert.ok(n !== null, "the connection ended before the echo");
    got += n;
  }
  assert.deepEqual(echoed, ping);
  return conn;
}

/** Waits (5 s at most) for the agent to end `conn`: EOF or a reset. */
export async function connectionEnds(conn: Deno.TcpConn): Promise<void> {
  const end = await withTimeout(
    conn.read(new Uint8Array(16)).then((n) => n, () => "error"),
    5000,
    "the connection to end",
  );
  assert.ok(end === null || end === "error", `the connection still reads ${end}`);
}
