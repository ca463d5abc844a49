import assert from "node:assert/strict";
import { metric, scrape, waitFor } from "./harness.ts";
import { freePort, readAll, startTcpTunnel, withTimeout, writeAll } from "./tcp_util.ts";

/** Connects to the agent and measures how long until the tunnel closes the connection. */
async function closedWithin(port: number): Promise<number> {
  const started = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await withTimeout(conn.read(new Uint8Array(16)).catch(() => null), 5000, "close");
  } finally {
    conn.close();
  }
  return performance.now() - started;
}

Deno.test("tcp backend down: prompt close, breaker opens, closes once the backend is back", async () => {
  const backendPort = freePort();
  const tunnel = await startTcpTunnel({
    backends: { db: backendPort },
    unservedForwards: ["secret"],
    circuit: { failures: 3, reset_ms: 1000 },
  });
  let backend: Deno.TcpListener | undefined;
  try {
    const connectorMetrics = () => scrape(String(tunnel.connector.ready.metrics));
    const circuit = 'ztna_connector_circuit_state{service="db"}';
    assert.equal(metric(await connectorMetrics(), circuit), 0);

    for (let i = 0; i < 3; i++) {
      const ms = await closedWithin(tunnel.ports.db);
      console.log(`tcp backend down: attempt ${i + 1} closed after ${ms.toFixed(0)} ms`);
      assert.ok(ms < 1000, `connection ${i + 1} took ${ms.toFixed(0)} ms to fail`);
    }
    await tunnel.connector.waitForLog((l) =>
      l.msg === "circuit breaker state changed" && l.to === "open" && l.service === "db"
    );
    assert.equal(metric(await connectorMetrics(), circuit), 2);

    // While open, flows are refused without a connect attempt.
    const ms = await closedWithin(tunnel.ports.db);
    assert.ok(ms < 1000, `refusal with an open circuit took ${ms.toFixed(0)} ms`);
    assert.ok(
      metric(
        await connectorMetrics(),
        'ztna_connector_backend_errors_total{reason="circuit_open"}',
      ) >=
        1,
    );

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

    // Default deny: a service outside the policy is refused at the relay, just as promptly.
    const denied = await closedWithin(tunnel.ports.secret);
    assert.ok(denied < 1000);
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
    await tunnel.stop();
  }
});
