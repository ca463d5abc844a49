import assert from "node:assert/strict";
import { type ComponentProcess, createPki } from "./harness.ts";
import { freeUdpPort, startAgent, startConnector } from "./ops_util.ts";

const EXIT_BOUND_MS = 500;

// The backoff is configured to 30 s from the first failure (reconnect.base_ms = max_ms =
// 30000) so the test need not sit through the doubling; a short idle timeout makes each
// dial to the dead relay fail in about a second.
const slowRetry = { reconnect: { base_ms: 30_000, max_ms: 30_000 }, idle_timeout_ms: 1000 };

async function exitDuringBackoff(proc: ComponentProcess): Promise<number> {
  await proc.waitForLog(
    (l) => l.msg === "relay link down, redialing" && Number(l.delay_ms) >= 5000,
    40_000,
  );
  const signalled = performance.now();
  const code = await proc.stop("SIGTERM", 5000);
  const ms = performance.now() - signalled;
  assert.equal(code, 0, `${proc.name} exit code`);
  assert.ok(ms <= EXIT_BOUND_MS, `${proc.name} exited ${ms.toFixed(0)} ms after SIGTERM`);
  return ms;
}

Deno.test("reconnection: SIGTERM during a 30 s backoff exits within 500 ms", async () => {
  const pki = await createPki(["connector-1", "agent-1"]);
  const deadRelay = `127.0.0.1:${freeUdpPort()}`;
  const connector = await startConnector(pki, "connector-1", [deadRelay], 9, slowRetry);
  const agent = await startAgent(pki, "agent-1", [deadRelay], slowRetry);
  try {
    const [connectorMs, agentMs] = await Promise.all([
      exitDuringBackoff(connector),
      exitDuringBackoff(agent.proc),
    ]);
    console.log(
      `backoff: SIGTERM during a 30 s backoff: connector exited in ${connectorMs.toFixed(0)} ms, ` +
        `agent in ${agentMs.toFixed(0)} ms (bound ${EXIT_BOUND_MS} ms)`,
    );
  } finally {
    await Promise.allSettled(
      [connector, agent.proc].map((p) => p.stop("SIGTERM").catch(() => p.stop("SIGKILL"))),
    );
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("reconnection: SIGTERM while a dial to a dead relay is in its handshake exits within 500 ms", async () => {
  const pki = await createPki(["connector-1"]);
  const connector = await startConnector(pki, "connector-1", [`127.0.0.1:${freeUdpPort()}`], 9);
  try {
    // The first dial waits up to its 10 s handshake timeout; stop in the middle of it.
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(!connector.logs.some((l) => l.msg === "relay link down, redialing"));
    const signalled = performance.now();
    assert.equal(await connector.stop("SIGTERM", 5000), 0);
    const ms = performance.now() - signalled;
    assert.ok(ms <= EXIT_BOUND_MS, `exited ${ms.toFixed(0)} ms after SIGTERM`);
  } finally {
    await connector.stop("SIGKILL").catch(() => {});
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
