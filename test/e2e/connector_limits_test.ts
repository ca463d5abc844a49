import assert from "node:assert/strict";
import {
  type ComponentProcess,
  metric,
  portOf,
  scrape,
  startEchoService,
  type UdpClient,
  udpClient,
} from "../_support/harness.ts";
import { startTrio, type Trio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";
import { withTimeout } from "../_support/tcp_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A relay (flows per connection far above the connector's caps), connector and two agents. */
async function startLimitedTrio(
  limits: Record<string, number>,
): Promise<{ trio: Trio; agent2: ComponentProcess; udpPort: number; tcpPort: number }> {
  const echo = await startEchoService();
  const trio = await startTrio({
    backends: {
      echo: [`udp://127.0.0.1:${portOf(echo.proc.ready.udp)}`, `tcp://${echo.proc.ready.tcp}`],
    },
    forwards: [
      { listen: "udp://127.0.0.1:0", service: "echo" },
      { listen: "tcp://127.0.0.1:0", service: "echo" },
    ],
    agents: ["agent-1", "agent-2"],
    relay: { limits: { flows_per_connection: 10_000 } },
    connector: { limits },
    processes: [echo.proc],
  });
  try {
    const agent2 = await trio.startAgent("agent-2");
    await agent2.waitForLog((l) => l.msg === "relay link up", 20_000);
    // Both agents forward the same services; each has its own local ports.
    return { trio, agent2, udpPort: portOf(trio.listen[0]), tcpPort: portOf(trio.listen[1]) };
  } catch (error) {
    await trio.stop();
    throw error;
  }
}

/** Sends `text` from `client` to `port`; resolves with the echo, or null after `ms`. */
async function udpEcho(client: UdpClient, port: number, text: string, ms = 3000) {
  await client.send(enc.encode(text), port);
  const reply = await client.receive(ms);
  return reply === null ? null : dec.decode(reply);
}

/** Opens a TCP connection through the agent; resolves with it once `hello` echoed, or null. */
async function tcpFlow(port: number): Promise<Deno.TcpConn | null> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(enc.encode("hello"));
  const buffer = new Uint8Array(16);
  const n = await withTimeout(conn.read(buffer), 10_000, "tcp echo or close").catch(() => null);
  if (n === null) {
    conn.close();
    return null;
  }
  assert.equal(dec.decode(buffer.subarray(0, n)), "hello");
  return conn;
}

Deno.test("connector limits: flows_per_agent refuses one agent's extras, others keep working", async () => {
  const { trio, agent2, udpPort, tcpPort } = await startLimitedTrio({ flows_per_agent: 8 });
  const agent2Udp = portOf((agent2.ready.listen as string[])[0]);
  const clients: UdpClient[] = [];
  const conns: Deno.TcpConn[] = [];
  const client = () => {
    const c = udpClient();
    clients.push(c);
    return c;
  };
  try {
    const other = client();
    assert.equal(await udpEcho(other, agent2Udp, "agent-2 before"), "agent-2 before");

    // agent-1 fills its budget: 6 UDP flows (one per source port) and 2 TCP flows.
    for (let i = 0; i < 6; i++) assert.equal(await udpEcho(client(), udpPort, `u${i}`), `u${i}`);
    for (let i = 0; i < 2; i++) {
      const conn = await tcpFlow(tcpPort);
      assert.ok(conn, `tcp flow ${i} opens`);
      conns.push(conn);
    }
    // Beyond it every open is refused, UDP and TCP alike.
    for (let i = 0; i < 4; i++) assert.equal(await udpEcho(client(), udpPort, "x", 1000), null);
    for (let i = 0; i < 2; i++) assert.equal(await tcpFlow(tcpPort), null, "tcp refused");

    const connector = await scrape(String(trio.connector.ready.metrics));
    assert.equal(metric(connector, 'ztna_connector_limit_hits_total{limit="flows_per_agent"}'), 6);
    assert.equal(metric(connector, 'ztna_connector_limit_hits_total{limit="max_flows"}'), 0);
    assert.equal(metric(connector, 'ztna_connector_backend_errors_total{reason="open_failed"}'), 0);
    await waitFor("agent-1 counts six limit refusals", async () => {
      const agent = await scrape(String(trio.agent.ready.metrics));
      return metric(agent, 'ztna_agent_flow_refusals_total{reason="limit"}') === 6;
    });
    const refusal = await trio.agent.waitForLog((l) =>
      l.msg === "relay refused flow" && l.reason === "limit"
    );
    assert.match(String(refusal.detail), /at most 8 flows per agent/);
    const logged = await trio.connector.waitForLog((l) => l.msg === "flow refused: limit reached");
    assert.equal(logged.agent, "agent-1");
    assert.equal(logged.limit, "flows_per_agent");
    // Rate-limited: six refusals within seconds leave at most a couple of lines.
    const lines = trio.connector.logs.filter((l) => l.msg === "flow refused: limit reached");
    assert.ok(lines.length <= 2, `${lines.length} limit lines`);

    // agent-2's flow kept working, and it may still open new ones.
    assert.equal(await udpEcho(other, agent2Udp, "agent-2 after"), "agent-2 after");
    assert.equal(await udpEcho(client(), agent2Udp, "agent-2 new"), "agent-2 new");
    const flows = await scrape(String(trio.connector.ready.metrics));
    assert.equal(metric(flows, 'ztna_connector_flows_active{protocol="udp"}'), 8);
    assert.equal(metric(flows, 'ztna_connector_flows_active{protocol="tcp"}'), 2);
  } finally {
    for (const c of clients) c.close();
    for (const conn of conns) conn.close();
    await trio.stop();
  }
});

Deno.test("connector limits: max_flows caps the total; an ended flow frees its place", async () => {
  const { trio, agent2, udpPort, tcpPort } = await startLimitedTrio({
    flows_per_agent: 100,
    max_flows: 3,
  });
  const agent2Udp = portOf((agent2.ready.listen as string[])[0]);
  const clients = [udpClient(), udpClient(), udpClient(), udpClient()];
  try {
    assert.equal(await udpEcho(clients[0], udpPort, "a"), "a");
    const tcp = await tcpFlow(tcpPort);
    assert.ok(tcp, "agent-1 tcp flow opens");
    assert.equal(await udpEcho(clients[1], agent2Udp, "b"), "b");
    // Three live flows: the next one is refused whoever asks.
    assert.equal(await udpEcho(clients[2], agent2Udp, "c", 1000), null);
    const samples = await scrape(String(trio.connector.ready.metrics));
    assert.equal(metric(samples, 'ztna_connector_limit_hits_total{limit="max_flows"}'), 1);
    await agent2.waitForLog((l) => l.msg === "relay refused flow" && l.reason === "limit");

    // Closing the TCP flow gives its place back.
    tcp.close();
    await waitFor("tcp flow ended at the connector", async () => {
      const s = await scrape(String(trio.connector.ready.metrics));
      return metric(s, 'ztna_connector_flows_active{protocol="tcp"}') === 0;
    });
    assert.equal(await udpEcho(clients[3], agent2Udp, "d"), "d");
  } finally {
    for (const c of clients) c.close();
    await trio.stop();
  }
});

Deno.test("connector limits: out of file descriptors is refused as limit, not backend_error", async () => {
  const { trio, udpPort } = await startLimitedTrio({});
  const pid = trio.connector.pid;
  const clients: UdpClient[] = [];
  // Only the soft limit moves: raising it back needs no privilege.
  const prlimit = (files: number | string) =>
    new Deno.Command("prlimit", { args: [`--pid=${pid}`, `--nofile=${files}:`] }).output();
  const limits = await new Deno.Command("prlimit", {
    args: [`--pid=${pid}`, "--nofile", "--raw", "--noheadings", "--output=SOFT"],
  }).output();
  const soft = new TextDecoder().decode(limits.stdout).trim();
  try {
    // Room for two more descriptors: the third and later flow sockets hit EMFILE.
    const open = [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
    assert.ok((await prlimit(open + 2)).success, "prlimit");
    const answers: (string | null)[] = [];
    for (let i = 0; i < 5; i++) {
      const c = udpClient();
      clients.push(c);
      answers.push(await udpEcho(c, udpPort, `f${i}`, 1500));
    }
    assert.ok((await prlimit(soft)).success, "prlimit restored");
    assert.ok(answers.some((a) => a === null), `some refused: ${answers}`);
    assert.ok(answers.some((a) => a !== null), `some served: ${answers}`);
    const refused = answers.filter((a) => a === null).length;
    const samples = await scrape(String(trio.connector.ready.metrics));
    assert.equal(metric(samples, 'ztna_connector_limit_hits_total{limit="open_files"}'), refused);
    assert.equal(metric(samples, 'ztna_connector_backend_errors_total{reason="open_failed"}'), 0);
    await trio.agent.waitForLog((l) => l.msg === "relay refused flow" && l.reason === "limit");
    // With descriptors back, new flows open again.
    const c = udpClient();
    clients.push(c);
    assert.equal(await udpEcho(c, udpPort, "again"), "again");
  } finally {
    await prlimit(soft);
    for (const c of clients) c.close();
    await trio.stop();
  }
});
