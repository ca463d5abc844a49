/**
 * The product's data path through a blind relay (issue 14), with real relay, connector and
 * agent processes: the relay only ever handles end-to-end session packets (captured on both
 * hops, none shows the plaintext); a relay drained or killed under a 200 MiB download and a
 * UDP stream hands the same session to another relay; a revocation ends flows at once, and
 * the connector's own allowlist holds even where the relay still grants.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { isChannelTraffic } from "../../shared/protocol/channel_packet.ts";
import {
  type ComponentProcess,
  metric,
  portOf,
  scrape,
  startEchoService,
} from "../_support/harness.ts";
import { startFaultTunnel } from "../_support/fault_util.ts";
import { numberedStream } from "../_support/ops_util.ts";
import {
  connectAndPing,
  connectionEnds,
  echoTcp,
  patternChunks,
  patternSha256,
  readAll,
  readHashed,
  startTcpServer,
  withTimeout,
  writeAll,
} from "../_support/tcp_util.ts";
import { startTrio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";

const MiB = 1 << 20;
const SECRET = Buffer.from("plaintext-the-relay-must-never-see");

Deno.test("blind tunnel: every packet the relay forwards for a UDP and a TCP flow is opaque", async () => {
  let channelPackets = 0;
  let channelBytes = 0;
  let leaked = 0;
  await using tunnel = await startFaultTunnel({
    agentHop: {},
    connectorHop: {},
    // Everything the relay receives from and sends to agent and connector passes a proxy.
    // Channel packets travel as they are (the relay adds no encryption of its own): what
    // the proxies see of them is exactly what the relay handled and forwarded.
    tap(_hop, data) {
      if (!isChannelTraffic(data)) return;
      channelPackets++;
      channelBytes += data.length;
      if (Buffer.from(data.buffer, data.byteOffset, data.length).includes(SECRET)) leaked++;
    },
  });
  // UDP: 50 datagrams carrying the secret, each echoed.
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    for (let i = 0; i < 50; i++) {
      const payload = Buffer.concat([Buffer.from(`${i} `), SECRET]);
      await socket.send(payload, { transport: "udp", hostname: "127.0.0.1", port: tunnel.udpPort });
      const [echo] = await withTimeout(socket.receive(), 5000, `echo ${i}`);
      assert.deepEqual(Buffer.from(echo), payload);
    }
  } finally {
    socket.close();
  }
  // TCP: 4 MiB of the secret repeated, checked by the sink's SHA-256.
  const block = Buffer.concat(Array.from({ length: 4096 }, () => SECRET));
  const rounds = Math.ceil(4 * MiB / block.length);
  const expected = createHash("sha256");
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: tunnel.tcpPort });
  try {
    for (let i = 0; i < rounds; i++) {
      await writeAll(conn, block);
      expected.update(block);
    }
    await conn.closeWrite();
    const answer = new TextDecoder().decode(await readAll(conn, 30_000));
    assert.equal(answer, `${rounds * block.length} ${expected.digest("hex")}\n`);
  } finally {
    conn.close();
  }
  // The relay carried no flow of its own: all of it went through its channel, blind.
  const relay = await scrape(String(tunnel.relay.ready.metrics));
  assert.equal(metric(relay, 'ztna_relay_flows_opened_total{protocol="udp"}'), 0);
  assert.equal(metric(relay, 'ztna_relay_flows_opened_total{protocol="tcp"}'), 0);
  assert.equal(metric(relay, "ztna_relay_channels_active"), 1);
  assert.ok(channelBytes > rounds * block.length, "the flows' bytes crossed as channel packets");
  console.log(
    `blind tunnel: ${channelPackets} channel packets (${(channelBytes / MiB).toFixed(1)} MiB) ` +
      `captured on both hops; ${leaked} show the plaintext`,
  );
  assert.equal(leaked, 0, "a packet the relay forwarded shows the plaintext");
});

/** Loss among the stream's datagrams sent from `from` to `to` (ms, performance.now()). */
function lostBetween(
  report: { sentAt: number[]; echoedAt: Map<number, number> },
  from: number,
  to: number,
): number {
  return report.sentAt.filter((at, seq) => at >= from && at < to && !report.echoedAt.has(seq))
    .length;
}

Deno.test("blind tunnel: SIGTERM, then SIGKILL of the carrying relay; a 200 MiB download and a 500/s UDP stream carry on in the same session", async () => {
  const total = 200 * MiB;
  const bulk = startTcpServer(async (conn) => {
    for (const chunk of patternChunks(total, 5)) await writeAll(conn, chunk);
  });
  const echo = await startEchoService();
  await using trio = await startTrio({
    relays: 3,
    backends: {
      echo: `udp://127.0.0.1:${echo.port}`,
      bulk: `tcp://127.0.0.1:${bulk.port}`,
    },
    forwards: [
      { listen: "udp://127.0.0.1:0", service: "echo" },
      { listen: "tcp://127.0.0.1:0", service: "bulk" },
    ],
    relay: { drain_ms: 3000 },
    processes: [echo.proc],
    cleanups: [() => bulk.close()],
  });
  const [relayA, relayB] = trio.relays;
  const { agent } = trio;
  const stream = numberedStream(portOf(trio.listen[0]), 2);
  const moved = (cause: string) =>
    agent.waitForLog((l) => l.msg === "end-to-end session moved" && l.cause === cause, 15_000);
  try {
    await waitFor("the stream flowing through relay A", () => stream.received >= 100);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(trio.listen[1]) });
    // When each signal went out: monotonic (for the stream's loss) and wall clock (for logs).
    const term = { at: 0, wall: 0 };
    const kill = { at: 0, wall: 0 };
    const download = readHashed(conn, (got) => {
      if (got >= 40 * MiB && term.at === 0) {
        Object.assign(term, { at: performance.now(), wall: Date.now() });
        void relayA.stop("SIGTERM", 10_000);
      }
      if (got >= 120 * MiB && kill.at === 0) {
        Object.assign(kill, { at: performance.now(), wall: Date.now() });
        relayB.signal("SIGKILL");
      }
    });
    const drained = await moved("draining");
    const killed = await moved("dead");
    const termMoveMs = Date.parse(String(drained.time)) - term.wall;
    const killMoveMs = Date.parse(String(killed.time)) - kill.wall;
    const result = await withTimeout(download, 300_000, "the 200 MiB download");
    conn.close();
    assert.equal(result.total, total);
    assert.equal(result.sha256, patternSha256(total, 5));
    const resumeFrom = stream.lastEchoed;
    await waitFor("the stream running on", () => stream.lastEchoed >= resumeFrom + 100);
    const report = await stream.stop();
    const lostTerm = lostBetween(report, term.at, term.at + 3000);
    const lostKill = lostBetween(report, kill.at, kill.at + 6000);
    const samples = await scrape(String(agent.ready.metrics));
    console.log(
      `blind tunnel failover: 200 MiB SHA-256 ok; SIGTERM: moved after ${
        termMoveMs.toFixed(0)
      } ms, UDP lost ${lostTerm}; SIGKILL: moved after ${
        killMoveMs.toFixed(0)
      } ms, UDP lost ${lostKill} (500/s)`,
    );
    // One session all along, moved twice: the TCP flow never reconnected.
    assert.equal(metric(samples, "ztna_agent_sessions_opened_total"), 1);
    assert.equal(metric(samples, 'ztna_agent_path_switches_total{cause="draining"}'), 1);
    assert.equal(metric(samples, 'ztna_agent_path_switches_total{cause="dead"}'), 1);
    assert.ok(lostTerm <= 500, `SIGTERM cost ${lostTerm} datagrams, more than 1 s worth`);
    // The kill is noticed by keepalives (2 s without an answer), then the move: 3 s worth.
    assert.ok(lostKill <= 1500, `SIGKILL cost ${lostKill} datagrams, more than 3 s worth`);
  } finally {
    await stream.stop(0).catch(() => {});
  }
});

/** A UDP round trip from `socket` through `port`; true when the echo came back in time. */
async function udpPing(socket: Deno.DatagramConn, port: number, ms = 2000): Promise<boolean> {
  await socket.send(new Uint8Array([1, 2, 3]), { transport: "udp", hostname: "127.0.0.1", port });
  const got = await withTimeout(socket.receive(), ms, "udp echo").catch(() => null);
  return got !== null;
}

async function reconfigure(
  proc: ComponentProcess,
  // deno-lint-ignore no-explicit-any
  edit: (config: any) => void,
): Promise<void> {
  const config = JSON.parse(await Deno.readTextFile(proc.configPath!));
  edit(config);
  await Deno.writeTextFile(proc.configPath!, JSON.stringify(config));
  proc.signal("SIGHUP");
}

Deno.test("blind tunnel: a revocation ends UDP and TCP flows at once; the connector's own allowlist holds where the relay still grants", async () => {
  const tcpEcho = startTcpServer(echoTcp);
  const echo = await startEchoService();
  await using trio = await startTrio({
    backends: {
      echo: `udp://127.0.0.1:${echo.port}`,
      tcpecho: `tcp://127.0.0.1:${tcpEcho.port}`,
    },
    forwards: [
      { listen: "udp://127.0.0.1:0", service: "echo" },
      { listen: "tcp://127.0.0.1:0", service: "tcpecho" },
    ],
    agents: ["agent-1", "agent-2"],
    processes: [echo.proc],
    cleanups: [() => tcpEcho.close()],
  });
  const { relay, connector, agent } = trio;
  const [udpPort, tcpPort] = trio.listen.map(portOf);
  const agentMetrics = () => scrape(String(agent.ready.metrics));
  const flowsGone = async () => {
    const a = await agentMetrics();
    return metric(a, 'ztna_agent_flows_active{protocol="udp"}') === 0 &&
      metric(a, 'ztna_agent_flows_active{protocol="tcp"}') === 0;
  };
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    // The relay revokes agent-1: the connector hears the empty grant and ends both flows.
    assert.ok(await udpPing(socket, udpPort, 5000), "udp before the revocation");
    let conn = await connectAndPing(tcpPort);
    await reconfigure(relay, (c) => {
      c.services.echo.agents = ["agent-2"];
      c.services.tcpecho.agents = ["agent-2"];
    });
    const revokedAt = performance.now();
    await connectionEnds(conn);
    await waitFor("both flows ended at the agent", flowsGone, 5000);
    const relayRevokeMs = performance.now() - revokedAt;
    conn.close();
    assert.equal(await udpPing(socket, udpPort, 1000), false, "udp after the revocation");

    // Granted again: a fresh session carries both.
    await reconfigure(relay, (c) => {
      c.services.echo.agents = ["agent-1", "agent-2"];
      c.services.tcpecho.agents = ["agent-1", "agent-2"];
    });
    await waitFor("udp through a new session", () => udpPing(socket, udpPort, 1000), 10_000);
    conn = await connectAndPing(tcpPort);

    // The connector's own allowlist now serves agent-2 only; the relay still grants agent-1.
    await reconfigure(connector, (c) => {
      c.agents = { echo: ["agent-2"], tcpecho: ["agent-2"] };
    });
    const restrictedAt = performance.now();
    await connectionEnds(conn);
    await waitFor("both flows ended at the agent", flowsGone, 5000);
    const connectorRevokeMs = performance.now() - restrictedAt;
    conn.close();
    // Fresh opens are refused by the connector, whatever the relay says.
    assert.equal(await udpPing(socket, udpPort, 1000), false, "a fresh udp flow");
    const fresh = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort });
    await writeAll(fresh, new TextEncoder().encode("ping"));
    await connectionEnds(fresh);
    fresh.close();
    const c = await scrape(String(connector.ready.metrics));
    assert.ok(metric(c, 'ztna_connector_grant_refusals_total{service="tcpecho"}') >= 1);
    assert.ok(metric(c, 'ztna_connector_grant_refusals_total{service="echo"}') >= 1);
    const r = await scrape(String(relay.ready.metrics));
    assert.equal(metric(r, "ztna_relay_channels_active"), 1, "the relay still grants");
    console.log(
      `blind tunnel revocation: relay SIGHUP ended both flows in ${relayRevokeMs.toFixed(0)} ms, ` +
        `connector allowlist in ${connectorRevokeMs.toFixed(0)} ms`,
    );
  } finally {
    socket.close();
  }
});
