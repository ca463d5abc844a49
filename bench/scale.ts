/**
 * `deno task bench:scale`: N concurrent agents (real QUIC connections with mTLS, Retry and
 * the `hello` exchange, each opening a UDP flow and getting one datagram echoed) against one
 * relay, N = 100 → 2,000. Reports relay RSS per connection and per flow, handshakes per
 * second as seen by the clients, and relay CPU per handshake (its capacity on one core).
 * Then every agent asks for `--channels-each` channels (`session_open`, default 2: 4,000
 * channels at 2,000 agents) and the relay's RSS per channel and in all is reported.
 *
 * The agents are in-process clients built on the same `runRelayLink` the agent uses, so
 * 2,000 of them fit on this machine. The relay's per-IP handshake budget and per-identity
 * connection limit are raised for the run (all clients share one address and identity).
 *
 * Flags: `--steps=100,500,1000,2000`.
 *
 * @module
 */
import { createBackoff } from "../shared/backoff.ts";
import { createFlowDatagrams, type FlowDatagrams } from "../shared/flow_datagrams.ts";
import { createLogger } from "../shared/log.ts";
import { type RelaySession, runRelayLink } from "../shared/relay_link.ts";
import { readTlsFiles } from "../shared/tls_files.ts";
import { metric, scrape } from "../test/_support/harness.ts";
import { waitFor } from "../test/_support/wait.ts";
import {
  cpuSeconds,
  progress,
  rssBytes,
  sleep,
  startBenchTunnel,
  writeResult,
} from "./bench_util.ts";
import { startUdpSink } from "./udp_sink.ts";

const steps = (Deno.args.find((a) => a.startsWith("--steps="))?.slice(8) ?? "100,500,1000,2000")
  .split(",").map(Number);
const CONCURRENT_DIALS = 64;
const CHANNELS_EACH = Number(
  Deno.args.find((a) => a.startsWith("--channels-each="))?.slice(16) ?? 2,
);
const EXTRA_FLOW_CONNECTIONS = 200;
const EXTRA_FLOWS_EACH = 10;

const echo = startUdpSink(true);
const tunnel = await startBenchTunnel({
  services: { echo: [`udp://127.0.0.1:${echo.port}`] },
  forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
  limits: {
    handshakes_per_second_per_ip: 1_000_000,
    connections_per_identity: 100_000,
    max_connections: 100_000,
    // The connector answers every open on its one control stream: at the default 200/s
    // a burst of 2,000 opens gets the connector itself shed (LIMIT) by the relay.
    control_frames_per_second: 100_000,
  },
  // Every client is agent-1: the connector's per-identity flow budget (1,024) would refuse
  // the rest.
  connectorLimits: { flows_per_agent: 100_000 },
});

/** One in-process agent: a relay link, its session and its flows. */
interface BenchAgent {
  session: RelaySession | null;
  datagrams: FlowDatagrams | null;
  flows: number[];
  echoed: number;
  nextRequest: number;
  channels: number;
}

const stop = new AbortController();
const links: Promise<void>[] = [];
const agents: BenchAgent[] = [];
const logger = createLogger("bench", { level: "error" });
const tls = readTlsFiles(tunnel.pki.tls("agent-1"));
const [relayHost, relayPort] = [
  tunnel.relayAddress.slice(0, tunnel.relayAddress.lastIndexOf(":")),
  Number(tunnel.relayAddress.slice(tunnel.relayAddress.lastIndexOf(":") + 1)),
];
const payload = new Uint8Array(64);

function startAgent(): BenchAgent {
  const agent: BenchAgent = {
    session: null,
    datagrams: null,
    flows: [],
    echoed: 0,
    nextRequest: 1,
    channels: 0,
  };
  links.push(runRelayLink({
    relays: [{ host: relayHost, port: relayPort }],
    serverName: "localhost",
    role: "agent",
    tls: () => tls,
    idleTimeoutMs: 60_000,
    signal: stop.signal,
    logger,
    backoff: createBackoff({ baseMs: 200, maxMs: 2000 }),
    handlers: {
      onUp(session) {
        agent.session = session;
        agent.datagrams = createFlowDatagrams(session.conn);
        openFlow(agent);
      },
      onMessage(_session, message) {
        if (message.type === "opened") {
          agent.flows.push(message.flow);
          agent.datagrams?.send(message.flow, payload);
        }
        if (message.type === "session_opened") agent.channels++;
      },
      onDatagram(_session, frame) {
        agent.datagrams?.receive(frame, () => agent.echoed++);
      },
      onDown() {
        agent.session = null;
      },
    },
  }));
  agents.push(agent);
  return agent;
}

function openFlow(agent: BenchAgent): void {
  agent.session?.send({ type: "open", id: agent.nextRequest++, service: "echo", protocol: "udp" });
}

const rows: Record<string, unknown>[] = [];
let flowRow: Record<string, unknown> | null = null;
let channelRow: Record<string, unknown> | null = null;
try {
  await sleep(1000);
  const baseRss = rssBytes(tunnel.relay.pid);
  progress(`relay RSS with one connector and one agent: ${(baseRss / 2 ** 20).toFixed(1)} MiB`);
  for (const target of steps) {
    const before = agents.length;
    const cpuBefore = cpuSeconds(tunnel.relay.pid);
    const started = performance.now();
    // At most CONCURRENT_DIALS handshakes in flight, like a fleet reconnecting.
    while (agents.length < target) {
      const inFlight = agents.filter((a) => a.flows.length === 0).length;
      if (inFlight >= CONCURRENT_DIALS) {
        await sleep(2);
        continue;
      }
      startAgent();
    }
    // A datagram may be lost (UDP): agents without an echo yet send again now and then.
    let lastNudge = performance.now();
    await waitFor(`${target} agents with an echoed flow`, () => {
      if (performance.now() - lastNudge > 500) {
        lastNudge = performance.now();
        for (const a of agents) {
          if (a.echoed === 0 && a.flows.length > 0) a.datagrams?.send(a.flows[0], payload);
        }
      }
      return agents.every((a) => a.echoed > 0);
    }, 120_000).catch((error) => {
      const up = agents.filter((a) => a.session !== null).length;
      const flows = agents.filter((a) => a.flows.length > 0).length;
      const echoed = agents.filter((a) => a.echoed > 0).length;
      throw new Error(`${error.message}: ${up} up, ${flows} with a flow, ${echoed} echoed`);
    });
    const seconds = (performance.now() - started) / 1000;
    const relayCpu = cpuSeconds(tunnel.relay.pid) - cpuBefore;
    await sleep(1500);
    const rss = rssBytes(tunnel.relay.pid);
    const heap = metric(
      await scrape(String(tunnel.relay.ready.metrics)),
      "nodejs_heap_size_used_bytes",
    );
    const added = target - before;
    const row = {
      agents: target,
      relay_rss_mib: Number((rss / 2 ** 20).toFixed(1)),
      rss_per_connection_kb: Number(((rss - baseRss) / target / 1024).toFixed(1)),
      js_heap_mib: Number((heap / 2 ** 20).toFixed(1)),
      handshakes_per_s: Math.round(added / seconds),
      relay_cpu_ms_per_handshake: Number((relayCpu * 1000 / added).toFixed(2)),
    };
    progress(row);
    rows.push(row);
  }
  // Per flow: more flows on some of the connections, same RSS reading.
  const rssBefore = rssBytes(tunnel.relay.pid);
  const some = agents.slice(0, EXTRA_FLOW_CONNECTIONS);
  for (const agent of some) for (let i = 0; i < EXTRA_FLOWS_EACH; i++) openFlow(agent);
  await waitFor(
    "extra flows",
    () => some.every((a) => a.flows.length >= 1 + EXTRA_FLOWS_EACH),
    60_000,
  );
  await sleep(1500);
  const extra = EXTRA_FLOW_CONNECTIONS * EXTRA_FLOWS_EACH;
  flowRow = {
    flows_added: extra,
    rss_per_flow_bytes: Math.round((rssBytes(tunnel.relay.pid) - rssBefore) / extra),
  };
  progress(flowRow);
  // Channels: what end-to-end sessions cost the relay (and the connector announced to).
  const channelsBefore = {
    relay: rssBytes(tunnel.relay.pid),
    connector: rssBytes(tunnel.connector.pid),
  };
  for (const agent of agents) {
    for (let i = 0; i < CHANNELS_EACH; i++) {
      agent.session?.send({
        type: "session_open",
        id: agent.nextRequest++,
        service: "echo",
        session: crypto.randomUUID().replaceAll("-", ""),
      });
    }
  }
  const channels = agents.length * CHANNELS_EACH;
  await waitFor(
    `${channels} channels`,
    () => agents.every((a) => a.channels >= CHANNELS_EACH),
    120_000,
  );
  await sleep(1500);
  const relayRss = rssBytes(tunnel.relay.pid);
  channelRow = {
    agents: agents.length,
    channels,
    relay_rss_mib: Number((relayRss / 2 ** 20).toFixed(1)),
    rss_per_channel_bytes: Math.round((relayRss - channelsBefore.relay) / channels),
    connector_rss_per_channel_bytes: Math.round(
      (rssBytes(tunnel.connector.pid) - channelsBefore.connector) / channels,
    ),
  };
  progress(channelRow);
} finally {
  stop.abort();
  await Promise.race([Promise.allSettled(links), sleep(15_000)]);
  await tunnel.stop();
  await echo.close();
}
await writeResult("scale", {
  rows,
  flows: flowRow,
  channels: channelRow,
  bench_rss_mib: rssBytes("self") / 2 ** 20,
});
