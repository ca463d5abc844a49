/**
 * An agent that has printed `ready` but has no relay session yet (start-up, reconnect) holds
 * new local connections and datagrams for `connect_hold_ms` instead of answering with an empty
 * reply; once the session is up they are served.
 */
import assert from "node:assert/strict";
import { startImpairProxy } from "../_support/impair_proxy.ts";
import {
  metric,
  portOf,
  scrape,
  startComponent,
  startEchoService,
  udpClient,
} from "../_support/harness.ts";
import { startTrio } from "../_support/trio.ts";
import { startTcpServer } from "../_support/tcp_util.ts";

const decoder = new TextDecoder();

Deno.test("agent: a TCP connection and a datagram sent before the session is up are served once it is", async () => {
  const web = startTcpServer(async (conn) => {
    await conn.write(
      new TextEncoder().encode(
        "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n",
      ),
    );
  });
  const echo = await startEchoService();
  const trio = await startTrio({
    backends: { web: `tcp://127.0.0.1:${web.port}`, echo: `udp://127.0.0.1:${echo.port}` },
    forwards: [
      { listen: "tcp://127.0.0.1:0", service: "web" },
      { listen: "udp://127.0.0.1:0", service: "echo" },
    ],
    agents: ["agent-1", "agent-2"],
    processes: [echo.proc],
    cleanups: [() => web.close()],
  });
  // agent-2 reaches the relay through a proxy that drops everything at first.
  const proxy = startImpairProxy({
    target: { host: "127.0.0.1", port: portOf(trio.relayAddress) },
  });
  const client = udpClient();
  try {
    proxy.blackhole(60_000);
    const agent = await startComponent("agent", {
      ...trio.configs.agent,
      relays: [proxy.address],
      tls: trio.pki.tls("agent-2"),
      connect_hold_ms: 15_000,
      reconnect: { base_ms: 200, max_ms: 500 },
    });
    try {
      const [webPort, echoPort] = (agent.ready.listen as string[]).map(portOf);
      // Sent while the agent has no session: held, not refused.
      const curl = new Deno.Command("curl", {
        args: ["-sS", "--max-time", "30", `http://127.0.0.1:${webPort}/`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      await client.send(new TextEncoder().encode("early"), echoPort);
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(agent.logs.some((l) => l.msg === "relay link up"), false, "still no session");
      proxy.blackhole(0);
      await agent.waitForLog((l) => l.msg === "relay link up", 20_000);
      const reply = await client.receive(10_000);
      assert.equal(reply && decoder.decode(reply), "early", "the held datagram was delivered");
      const { code, stdout, stderr } = await curl;
      assert.equal(code, 0, decoder.decode(stderr));
      assert.equal(decoder.decode(stdout), "hello\n", "the held connection was served");
      const samples = await scrape(String(agent.ready.metrics));
      assert.equal(metric(samples, 'ztna_agent_flow_refusals_total{reason="not_connected"}'), 0);
    } finally {
      await agent.stop();
    }
  } finally {
    client.close();
    await proxy.close();
    await trio.stop();
  }
});
