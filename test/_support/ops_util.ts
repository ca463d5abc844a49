/**
 * Helpers for the operations tests (`ops_*_test.ts`): probe polling, a numbered
 * UDP stream that measures loss and gaps, and a real Prometheus server. Loopback only; every
 * wait is bounded.
 *
 * @module
 */
import { join } from "node:path";
import { type ComponentProcess, type Pki, portOf, startComponent } from "./harness.ts";
import { freePort } from "./ports.ts";

/** HTTP status of `GET http://address/path`, or 0 when the request failed. */
export async function probe(address: string, path: string, ms = 1000): Promise<number> {
  try {
    const response = await fetch(`http://${address}${path}`, { signal: AbortSignal.timeout(ms) });
    await response.body?.cancel();
    return response.status;
  } catch {
    return 0;
  }
}

/** What a {@linkcode numberedStream} measured. */
export interface StreamReport {
  sent: number;
  received: number;
  lost: number;
  /** Longest time between two consecutive echoes, in ms. */
  maxGapMs: number;
  /** `performance.now()` of every echo, by sequence number. */
  echoedAt: Map<number, number>;
  /** `performance.now()` at which each sequence number was sent. */
  sentAt: number[];
}

/** A running numbered UDP stream through an agent to an echo service. */
export interface NumberedStream {
  /** Stops sending, waits `settleMs` for late echoes, closes the socket and reports. */
  stop(settleMs?: number): Promise<StreamReport>;
  /** Echoes received so far. */
  readonly received: number;
  /** Highest sequence number echoed so far (-1 before the first). */
  readonly lastEchoed: number;
}

/**
 * Sends datagrams carrying a 32-bit sequence number to `port` every `intervalMs` from one
 * local socket (one flow) and records which come back.
 */
export function numberedStream(port: number, intervalMs = 5): NumberedStream {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const echoedAt = new Map<number, number>();
  const sentAt: number[] = [];
  let lastEchoed = -1;
  let running = true;
  const receiving = (async () => {
    try {
      for (;;) {
        const [data] = await socket.receive();
        if (data.length < 4) continue;
        const seq = new DataView(data.buffer, data.byteOffset).getUint32(0);
        if (!echoedAt.has(seq)) echoedAt.set(seq, performance.now());
        lastEchoed = Math.max(lastEchoed, seq);
      }
    } catch {
      // Socket closed.
    }
  })();
  const sending = (async () => {
    const payload = new Uint8Array(64);
    const view = new DataView(payload.buffer);
    const start = performance.now();
    while (running) {
      const seq = sentAt.length;
      view.setUint32(0, seq);
      sentAt.push(performance.now());
      await socket.send(payload, { transport: "udp", hostname: "127.0.0.1", port }).catch(
        () => {},
      );
      // Paced against the start time so a slow turn does not lower the offered rate.
      const next = start + (seq + 1) * intervalMs;
      await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
    }
  })();
  return {
    get received() {
      return echoedAt.size;
    },
    get lastEchoed() {
      return lastEchoed;
    },
    async stop(settleMs = 500) {
      running = false;
      await sending;
      await new Promise((r) => setTimeout(r, settleMs));
      socket.close();
      await receiving;
      const times = [...echoedAt.values()].sort((a, b) => a - b);
      let maxGapMs = 0;
      for (let i = 1; i < times.length; i++) maxGapMs = Math.max(maxGapMs, times[i] - times[i - 1]);
      return {
        sent: sentAt.length,
        received: echoedAt.size,
        lost: sentAt.length - echoedAt.size,
        maxGapMs,
        echoedAt,
        sentAt,
      };
    },
  };
}

/** Sends `payload` to `port` from a fresh socket every `everyMs` until it echoes; resolves ms. */
export async function untilEcho(port: number, ms: number, everyMs = 50): Promise<number | null> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const start = performance.now();
  let echoed: number | null = null;
  const receiving = socket.receive().then(() => echoed = performance.now(), () => {});
  try {
    while (echoed === null && performance.now() - start < ms) {
      await socket.send(new TextEncoder().encode("ping"), {
        transport: "udp",
        hostname: "127.0.0.1",
        port,
      }).catch(() => {});
      await Promise.race([receiving, new Promise((r) => setTimeout(r, everyMs))]);
    }
  } finally {
    socket.close();
    await receiving;
  }
  return echoed;
}

/** Starts a relay with the echo policy; `port` 0 picks an ephemeral one. */
export function startRelay(
  pki: Pki,
  options: { port?: number; connectors: string[]; agents: string[]; drainMs?: number },
): Promise<ComponentProcess> {
  return startComponent("relay", {
    listen: `127.0.0.1:${options.port ?? 0}`,
    metrics: "127.0.0.1:0",
    tls: pki.tls("relay"),
    services: { echo: { connectors: options.connectors, agents: options.agents } },
    drain_ms: options.drainMs ?? 2000,
  });
}

/** Starts a connector serving `echo` at `backendPort`, registered with every relay. */
export function startConnector(
  pki: Pki,
  identity: string,
  relays: string[],
  backendPort: number,
  extra: Record<string, unknown> = {},
): Promise<ComponentProcess> {
  return startComponent("connector", {
    relays,
    metrics: "127.0.0.1:0",
    tls: pki.tls(identity),
    services: { echo: `udp://127.0.0.1:${backendPort}` },
    ...extra,
  });
}

/** Starts an agent forwarding a local port to `echo`; resolves with it and that port. */
export async function startAgent(
  pki: Pki,
  identity: string,
  relays: string[],
  extra: Record<string, unknown> = {},
): Promise<{ proc: ComponentProcess; port: number }> {
  const proc = await startComponent("agent", {
    relays,
    metrics: "127.0.0.1:0",
    tls: pki.tls(identity),
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    ...extra,
  });
  return { proc, port: portOf((proc.ready.listen as string[])[0]) };
}

/** A Prometheus server started for a test. */
export interface Prometheus {
  readonly address: string;
  /** GET an API path; resolves with the parsed JSON body. */
  api(path: string): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

/**
 * Starts the Debian `prometheus` binary scraping `targets` (job name → `host:port`) every
 * second, with its config and storage in a temp folder. Resolves once it reports ready.
 */
export async function startPrometheus(targets: Record<string, string>): Promise<Prometheus> {
  const dir = await Deno.makeTempDir({ prefix: "ztna-prometheus-" });
  const jobs = Object.entries(targets).map(([job, target]) =>
    `  - job_name: ${job}\n    static_configs:\n      - targets: ["${target}"]`
  );
  const config = join(dir, "prometheus.yml");
  await Deno.writeTextFile(
    config,
    `global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n${jobs.join("\n")}\n`,
  );
  const address = `127.0.0.1:${freePort("tcp")}`;
  const child = new Deno.Command("prometheus", {
    args: [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=${address}`,
    ],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await child.status;
    clearTimeout(timer);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = Date.now() + 20_000;
  while ((await probe(address, "/-/ready")) !== 200) {
    if (Date.now() > deadline) {
      await stop();
      throw new Error("prometheus did not become ready within 20 s");
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    address,
    async api(path) {
      const response = await fetch(`http://${address}${path}`, {
        signal: AbortSignal.timeout(5000),
      });
      return await response.json();
    },
    stop,
  };
}
