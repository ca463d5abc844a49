/**
 * The one way tests start a relay/connector/agent trio: n relays, n connectors and an agent,
 * each a real process in its permission sandbox, returned as an `AsyncDisposable` so that
 * `await using` stops everything at the end of the test.
 *
 * @module
 */
import {
  type ComponentProcess,
  createPki,
  type Pki,
  portOf,
  startComponent,
  startEchoService,
} from "./harness.ts";
import type { Component } from "../../tools/permissions.ts";
import { waitFor } from "./wait.ts";

/** Config fragments for a relay/connector/agent trio around one service. */
export function relayConfig(
  pki: Pki,
  services: Record<string, { connectors: string[]; agents: string[] }>,
) {
  return {
    listen: "127.0.0.1:0",
    metrics: "127.0.0.1:0",
    tls: pki.tls("relay"),
    services,
    drain_ms: 500,
  };
}

/** A running relay + connector + agent around one UDP service. */
export interface Tunnel extends Trio {
  /** The agent's local UDP port for the service. */
  agentPort: number;
  /** The backend's UDP port. */
  backendPort: number;
}

/** Options for {@linkcode startTunnel}. */
export interface TunnelOptions {
  /** Service name (default "echo"). */
  service?: string;
  /** Backend UDP port; the demo echo service is started when absent. */
  backendPort?: number;
  /** Agent identities allowed by policy (default ["agent-1"]). */
  allowedAgents?: string[];
  /** Extra client certificates to create. */
  extraClients?: string[];
  connectorLogLevel?: "debug" | "info";
}

/** What {@linkcode startTrio} starts around: backends, forwards, policy and extras. */
export interface TrioOptions {
  /**
   * Relays to start; every connector and agent is given all of them, in order.
   * @default {1}
   */
  relays?: number;
  /**
   * Connectors to start (`connector-1` … `connector-n`), each registered with every relay.
   * @default {1}
   */
  connectors?: number;
  /** The connector's `services`: backend URL(s) per service name. */
  backends: Record<string, string | string[]>;
  /** The agents' `forwards`. */
  forwards: { listen: string; service: string }[];
  /** Agents the policy allows for every backend service; the first one is started. */
  agents?: string[];
  /** More client certificates to create (identities outside the policy). */
  extraClients?: string[];
  /** Extra top-level config per component. */
  relay?: Record<string, unknown>;
  connector?: Record<string, unknown>;
  agent?: Record<string, unknown>;
  /** The relay address a dialer uses (e.g. a proxy in front of the relay); default direct. */
  dialAddress?(dialer: "connector" | "agent", relayAddress: string): string;
  /** Processes started before the trio, stopped after it. */
  processes?: ComponentProcess[];
  /** Cleanups run once every process has stopped (the caller may add to it later). */
  cleanups?: (() => Promise<unknown>)[];
  /** How long each process may take to exit on SIGTERM before it is killed. */
  stopTimeoutMs?: number;
  /** Starts one component (default {@linkcode startComponent}; benchmarks add `deno` flags). */
  start?(component: Component, config: Record<string, unknown>): Promise<ComponentProcess>;
}

/** A running relay + connector + agent; `await using` stops it at the end of the scope. */
export interface Trio extends AsyncDisposable {
  pki: Pki;
  /** The first relay. */
  relay: ComponentProcess;
  /** Every relay, in the order the dialers list them. */
  relays: ComponentProcess[];
  /** The first connector (`connector-1`). */
  connector: ComponentProcess;
  /** Every connector, `connector-1` first. */
  connectors: ComponentProcess[];
  agent: ComponentProcess;
  /** The first relay's QUIC address as the dialers were given it before `dialAddress`. */
  relayAddress: string;
  /** Every relay's QUIC address, in order. */
  relayAddresses: string[];
  /** The agent's `listen` addresses, in `forwards` order. */
  listen: string[];
  /** The configs the three were started with (a benchmark restarts them with these). */
  configs: Record<"relay" | "connector" | "agent", Record<string, unknown>>;
  /** Starts another agent with the same forwards. */
  startAgent(
    identity: string,
    tls?: { cert: string; key: string; ca: string },
    waitReady?: boolean,
  ): Promise<ComponentProcess>;
  /** Stops every process, then runs the cleanups (bounded). */
  stop(): Promise<void>;
}

/**
 * Starts the relays, whose policy lets every connector serve and the agents use every
 * backend service, the connectors, and the first agent; resolves once every connector is
 * registered with every relay and the agent's link is up. On failure everything started is
 * stopped.
 *
 * @example Usage
 * ```ts
 * import { startTrio } from "./trio.ts";
 *
 * // In a test: two relays, one connector, one agent; all stopped when the scope ends.
 * export async function twoRelays(echoPort: number): Promise<string[]> {
 *   await using trio = await startTrio({
 *     relays: 2,
 *     backends: { echo: `udp://127.0.0.1:${echoPort}` },
 *     forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
 *     relay: { drain_ms: 2000 },
 *   });
 *   return [...trio.relayAddresses, ...trio.listen];
 * }
 * ```
 */
export async function startTrio(options: TrioOptions): Promise<Trio> {
  const { relays: relayCount = 1, connectors: connectorCount = 1 } = options;
  const agents = options.agents ?? ["agent-1"];
  const connectorIds = Array.from({ length: connectorCount }, (_, i) => `connector-${i + 1}`);
  const pki = await createPki([...connectorIds, ...agents, ...options.extraClients ?? []]);
  const started: ComponentProcess[] = [...options.processes ?? []];
  const cleanups = options.cleanups ?? [];
  const stop = async () => {
    await Promise.allSettled(
      started.reverse().map((p) =>
        p.stop("SIGTERM", options.stopTimeoutMs).catch(() => p.stop("SIGKILL"))
      ),
    );
    await Promise.allSettled(cleanups.map((cleanup) => cleanup()));
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  };
  try {
    const policy = Object.fromEntries(
      Object.keys(options.backends).map((name) => [name, { connectors: connectorIds, agents }]),
    );
    const start = options.start ?? ((component, config) => startComponent(component, config));
    const configs = {} as Trio["configs"];
    configs.relay = { ...relayConfig(pki, policy), ...options.relay };
    const relays: ComponentProcess[] = [];
    for (let i = 0; i < relayCount; i++) {
      const relay = await start("relay", configs.relay);
      started.push(relay);
      relays.push(relay);
    }
    const relayAddresses = relays.map((relay) => String(relay.ready.quic));
    const dial = (dialer: "connector" | "agent") =>
      relayAddresses.map((address) => options.dialAddress?.(dialer, address) ?? address);
    configs.connector = {
      relays: dial("connector"),
      metrics: "127.0.0.1:0",
      tls: pki.tls("connector-1"),
      services: options.backends,
      drain_ms: 500,
      ...options.connector,
    };
    const connectors: ComponentProcess[] = [];
    for (const identity of connectorIds) {
      const connector = await start("connector", { ...configs.connector, tls: pki.tls(identity) });
      started.push(connector);
      connectors.push(connector);
    }
    for (const connector of connectors) {
      await waitFor(
        `${connector.name} registered with every relay`,
        () => connector.logs.filter((l) => l.msg === "registered").length >= relayCount,
        20_000,
      );
    }
    configs.agent = {
      relays: dial("agent"),
      metrics: "127.0.0.1:0",
      tls: pki.tls(agents[0]),
      forwards: options.forwards,
      drain_ms: 500,
      ...options.agent,
    };
    const startAgent = async (identity: string, tls = pki.tls(identity), waitReady = true) => {
      const config = { ...configs.agent, tls };
      const agent = waitReady
        ? await start("agent", config)
        : await startComponent("agent", config, { waitReady });
      started.push(agent);
      return agent;
    };
    const agent = await startAgent(agents[0]);
    await agent.waitForLog((l) => l.msg === "relay link up", 20_000);
    const listen = agent.ready.listen as string[];
    // The ready line names each forward's service and address in config order.
    const ready = agent.ready.forwards as { service: string; listen: string }[];
    if (
      JSON.stringify(ready.map((f) => [f.service, f.listen.split(":")[0]])) !==
        JSON.stringify(options.forwards.map((f) => [f.service, f.listen.split(":")[0]])) ||
      JSON.stringify(ready.map((f) => f.listen)) !== JSON.stringify(listen)
    ) throw new Error(`agent ready line out of config order: ${JSON.stringify(ready)}`);
    return {
      pki,
      relay: relays[0],
      relays,
      connector: connectors[0],
      connectors,
      agent,
      relayAddress: relayAddresses[0],
      relayAddresses,
      listen,
      configs,
      startAgent,
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Starts relay, connector (and echo backend unless given) and one allowed agent. */
export async function startTunnel(options: TunnelOptions = {}): Promise<Tunnel> {
  const { service = "echo", connectorLogLevel = "info" } = options;
  const processes: ComponentProcess[] = [];
  let backendPort = options.backendPort;
  if (backendPort === undefined) {
    const echo = await startEchoService();
    processes.push(echo.proc);
    backendPort = echo.port;
  }
  const trio = await startTrio({
    backends: { [service]: `udp://127.0.0.1:${backendPort}` },
    forwards: [{ listen: "udp://127.0.0.1:0", service }],
    agents: options.allowedAgents,
    extraClients: options.extraClients,
    connector: { log_level: connectorLogLevel },
    processes,
  });
  return { ...trio, agentPort: portOf(trio.listen[0]), backendPort };
}
