/**
 * Helpers for the fault suite (`fault_*_test.ts`) and the soak: a relay + connector + agent
 * trio carrying a UDP echo service and a TCP checksum sink, with optional impairment proxies
 * on the agent↔relay and relay↔connector hops; a SHA-256 TCP sink; RSS/heap/fd/lag samples.
 * Loopback only, ephemeral ports, every wait bounded.
 *
 * @module
 */
import {
  type ComponentProcess,
  metric,
  type Pki,
  portOf,
  scrape,
  startEchoService,
} from "./harness.ts";
import { startTrio } from "./trio.ts";
import { type Impairment, type ImpairProxy, startImpairProxy } from "./impair_proxy.ts";
import { readHashed, startTcpServer, writeAll } from "./tcp_util.ts";

/** A TCP server answering `<bytes> <sha256>\n` once the client half-closes. */
export interface TcpSink {
  readonly port: number;
  close(): Promise<void>;
}

/** Starts a loopback TCP sink that hashes everything it reads. */
export function startTcpSink(): TcpSink {
  return startTcpServer(async (conn) => {
    const { total, sha256 } = await readHashed(conn);
    await writeAll(conn, new TextEncoder().encode(`${total} ${sha256}\n`));
  });
}

/** Options for {@linkcode startFaultTunnel}. */
export interface FaultTunnelOptions {
  /** Impairment of the agent↔relay hop (both directions); no proxy when absent. */
  agentHop?: Impairment;
  /** Impairment of the relay↔connector hop (both directions); no proxy when absent. */
  connectorHop?: Impairment;
  /** Seed of both proxies' decisions. */
  seed?: number;
  /** Extra relay config (merged at the top level). */
  relay?: Record<string, unknown>;
  /** Extra connector and agent config (merged at the top level). */
  dialer?: Record<string, unknown>;
  /** Agent identities allowed by policy besides `agent-1` (certificates are created). */
  extraAgents?: string[];
  /** Start the TCP sink and forward `sink` over TCP too (default true). */
  tcp?: boolean;
  /** Sees every datagram either proxy receives (a capture of both hops). */
  tap?: (hop: "agent" | "connector", data: Uint8Array) => void;
}

/** A running trio with its backends and proxies. */
export interface FaultTunnel extends AsyncDisposable {
  pki: Pki;
  relay: ComponentProcess;
  connector: ComponentProcess;
  agent: ComponentProcess;
  /** Proxies, when the hop is impaired. */
  agentProxy: ImpairProxy | null;
  connectorProxy: ImpairProxy | null;
  /** The agent's local UDP port for `echo`. */
  udpPort: number;
  /** The agent's local TCP port for `sink` (0 without TCP). */
  tcpPort: number;
  /** The echo backend's UDP port. */
  echoPort: number;
  stop(): Promise<void>;
}

/** Starts echo backend, TCP sink, relay, connector and agent, with proxies on impaired hops. */
export async function startFaultTunnel(options: FaultTunnelOptions = {}): Promise<FaultTunnel> {
  const { seed = 1, tcp = true, extraAgents = [] } = options;
  const proxies: Partial<Record<"connector" | "agent", ImpairProxy | null>> = {};
  const echo = await startEchoService();
  const sink = tcp ? startTcpSink() : null;
  const cleanups = [
    () => Promise.allSettled(Object.values(proxies).map((p) => p?.close())),
    async () => await sink?.close(),
  ];
  const trio = await startTrio({
    backends: {
      echo: `udp://127.0.0.1:${echo.port}`,
      ...(sink ? { sink: `tcp://127.0.0.1:${sink.port}` } : {}),
    },
    forwards: [
      { listen: "udp://127.0.0.1:0", service: "echo" },
      ...(sink ? [{ listen: "tcp://127.0.0.1:0", service: "sink" }] : []),
    ],
    agents: ["agent-1", ...extraAgents],
    relay: options.relay,
    connector: options.dialer,
    agent: options.dialer,
    // Each impaired hop gets its own proxy in front of the relay, made once.
    dialAddress(dialer, relayAddress) {
      if (!(dialer in proxies)) {
        const hop = dialer === "connector" ? options.connectorHop : options.agentHop;
        proxies[dialer] = hop === undefined ? null : startImpairProxy({
          target: { host: "127.0.0.1", port: portOf(relayAddress) },
          seed: seed + (dialer === "connector" ? 0 : 1000),
          upstream: hop,
          downstream: hop,
          tap: options.tap && ((_direction, data) => options.tap!(dialer, data)),
        });
      }
      return proxies[dialer]?.address ?? relayAddress;
    },
    processes: [echo.proc],
    cleanups,
    stopTimeoutMs: 8000,
  });
  const tcpListen = trio.listen.find((l) => l.startsWith("tcp://"));
  return {
    ...trio,
    agentProxy: proxies.agent ?? null,
    connectorProxy: proxies.connector ?? null,
    udpPort: portOf(trio.listen.find((l) => l.startsWith("udp://"))),
    tcpPort: tcpListen ? portOf(tcpListen) : 0,
    echoPort: echo.port,
  };
}

/** Process figures of one component, from `/proc` and its metrics. */
export interface ProcessSample {
  rss: number;
  heap: number;
  fds: number;
  /** `nodejs_eventloop_lag_seconds`, in ms. */
  lagMs: number;
}

/** Open file descriptors of `pid` (entries of `/proc/<pid>/fd`), or -1 when unreadable. */
export function openFds(pid: number): number {
  try {
    let n = 0;
    for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
    return n;
  } catch {
    return -1;
  }
}

/** Resident set size of `pid` from `/proc/<pid>/status` (bytes), or 0 when unreadable. */
export function procRss(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = /VmRSS:\s+(\d+) kB/.exec(status);
    return kb ? Number(kb[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Samples one component: RSS and heap from its metrics, fds from `/proc`. */
export async function sampleProcess(proc: ComponentProcess): Promise<ProcessSample> {
  const samples = await scrape(String(proc.ready.metrics));
  return {
    rss: metric(samples, "process_resident_memory_bytes") || procRss(proc.pid),
    heap: metric(samples, "nodejs_heap_size_used_bytes"),
    fds: openFds(proc.pid),
    lagMs: metric(samples, "nodejs_eventloop_lag_seconds") * 1000,
  };
}

/** Least-squares slope of `ys` over `xs` (units of y per unit of x); 0 for fewer than 2. */
export function linearSlope(xs: number[], ys: number[]): number {
  const n = Math.min(xs.length, ys.length);
  if (n < 2) return 0;
  const mx = xs.slice(0, n).reduce((a, b) => a + b, 0) / n;
  const my = ys.slice(0, n).reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** Sum of a metric over every label set (`name` or `name{...}` keys). */
export function metricSum(samples: Map<string, number>, name: string): number {
  let total = 0;
  for (const [key, value] of samples) {
    if (key === name || key.startsWith(`${name}{`)) total += value;
  }
  return total;
}
