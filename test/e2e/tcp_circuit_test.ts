import assert from "node:assert/strict";
import { metric, scrape } from "../_support/harness.ts";
import { waitFor } from "../_support/wait.ts";
import { readAll, startTcpTunnel, withTimeout, writeAll } from "../_support/tcp_util.ts";
import { freePort } from "../_support/ports.ts";

/**
 * Connects to the agent and waits for the tunnel to close the connection without sending a
 * byte. The 5 s timeout is a hang guard: the refusal is asserted by the counters it moves.
 */
async function refusedConnection(port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const read = await withTimeout(conn.read(new Uint8Array(16)).catch(() => null), 5000, "close");
    assert.equal(read, null, "a refused connection is closed without data");
  } finally {
    conn.close();
  }
}

Deno.test("tcp backend down: refused, breaker opens, closes once the backend is back", async () => {
  const backendPort = freePort();
  await using tunnel = await startTcpTunnel({
    backends: { db: backendPort },
    unservedForwards: ["secret"],
    circuit: { failures: 3, reset_ms: 1000 },
  });
  let backend: Deno.TcpListener | undefined;
  try {
    const connectorMetrics = () => scrape(String(tunnel.connector.ready.metrics));
    const circuit = 'ztna_connector_circuit_state{service="db"}';
    assert.equal(metric(await connectorMetrics(), circuit), 0);

    const connectFailed = 'ztna_connector_backend_errors_total{reason="connect_failed"}';
    const circuitOpen = 'ztna_connector_backend_errors_total{reason="circuit_open"}';
    const backendRefusals = 'ztna_agent_flow_refusals_total{reason="backend_error"}';
    const agentMetrics = () => scrape(String(tunnel.agent.ready.metrics));
    for (let i = 0; i < 3; i++) {
      await refusedConnection(tunnel.ports.db);
      // Each attempt was one connect to the dead backend, refused back to the agent.
      await waitFor(
        `connect failure ${i + 1} to be counted`,
        async () => metric(await connectorMetrics(), connectFailed) === i + 1,
      );
      assert.equal(metric(await agentMetrics(), backendRefusals), i + 1);
    }
    await tunnel.connector.waitForLog((l) =>
      l.msg === "circuit breaker state changed" && l.to === "open" && l.service === "db"
    );
    assert.equal(metric(await connectorMetrics(), circuit), 2);

    // While open, flows are refused without a connect attempt.
    await refusedConnection(tunnel.ports.db);
    await waitFor(
      "the open circuit to refuse a flow",
      async () => metric(await connectorMetrics(), circuitOpen) === 1,
    );
    assert.equal(metric(await connectorMetrics(), connectFailed), 3, "no connect while open");

    // The backend comes back; after reset_ms the next connection is the probe.
    backend = Deno.listen({ hostname: "127.0.0.1", port: backendPort });
    (async () => {
      for await (const conn of backend!) {
        (async () => {
          const request = await readAll(conn, 5000);
          await writeAll(conn, request);
          conn.close();
        })().catch(() => {});
      }
    })().catch(() => {});
    await new Promise((r) => setTimeout(r, 1100));
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: tunnel.ports.db });
    await writeAll(conn, new TextEncoder().encode("ping"));
    await conn.closeWrite();
    assert.equal(new TextDecoder().decode(await readAll(conn, 5000)), "ping");
    conn.close();
    await waitFor(
      "the circuit to close",
      async () => metric(await connectorMetrics(), circuit) === 0,
    );
    await tunnel.connector.waitForLog((l) =>
      l.msg === "circuit breaker state changed" && l.to === "closed"
    );

    // Default deny: a service outside the policy is refused at the relay, never reaching a
    // connector.
    await refusedConnection(tunnel.ports.secret);
    await tunnel.agent.waitForLog((l) => l.msg === "relay refused flow" && l.service === "secret");
    const relay = await scrape(String(tunnel.relay.ready.metrics));
    assert.ok(metric(relay, 'ztna_relay_auth_failures_total{reason="open_forbidden"}') >= 1);

    // Refused flows leave nothing behind: both ends finish the stream (the agent's FIN rides
    // on an end chunk), so the relay forgets them and they stop counting against limits.
    await waitFor("the relay to forget every flow", async () => {
      const response = await fetch(`http://${tunnel.relay.ready.metrics}/health`);
      return (await response.json()).flows === 0;
    });
  } finally {
    backend?.close();
  }
});
