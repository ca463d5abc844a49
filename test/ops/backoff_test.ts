import assert from "node:assert/strict";
import { type ComponentProcess, createPki } from "../_support/harness.ts";
import { startAgent, startConnector } from "../_support/ops_util.ts";
import { freePort } from "../_support/ports.ts";

// The exit is awaited with a guard that ends before the backoff delay would: exiting inside
// it at all shows the backoff was interrupted rather than waited out. How fast the exit is,
// is not judged (a loaded machine is slow; bench/ reports timings).
const GUARD_MARGIN_MS = 1000;

// The backoff is configured to 30 s from the first failure (reconnect.base_ms = max_ms =
// 30000) so the test need not sit through the doubling; a short idle timeout makes each
// dial to the dead relay fail in about a second.
const slowRetry = { reconnect: { base_ms: 30_000, max_ms: 30_000 }, idle_timeout_ms: 1000 };

/** Log lines after the last `shutdown requested` (what the process did once signalled). */
function afterShutdown(proc: ComponentProcess): Record<string, unknown>[] {
  const at = proc.logs.findLastIndex((l) => l.msg === "shutdown requested");
  assert.ok(at >= 0, `${proc.name} logged the shutdown`);
  return proc.logs.slice(at + 1);
}

async function exitDuringBackoff(proc: ComponentProcess): Promise<void> {
  const down = await proc.waitForLog(
    (l) => l.msg === "relay link down, redialing" && Number(l.delay_ms) >= 5000,
    40_000,
  );
  const redials = proc.logs.filter((l) => l.msg === "relay link down, redialing").length;
  // stop() throws if the process is still running when the guard (at least 4 s) expires.
  const guardMs = Number(down.delay_ms) - GUARD_MARGIN_MS;
  assert.equal(await proc.stop("SIGTERM", guardMs), 0, `${proc.name} exit code`);
  assert.equal(
    proc.logs.filter((l) => l.msg === "relay link down, redialing").length,
    redials,
    `${proc.name} did not dial again after the signal`,
  );
  assert.ok(afterShutdown(proc).some((l) => l.msg === "stopped"), `${proc.name} stopped cleanly`);
}

Deno.test("reconnection: SIGTERM during a 30 s backoff exits without waiting it out", async () => {
  const pki = await createPki(["connector-1", "agent-1"]);
  const deadRelay = `127.0.0.1:${freePort("udp")}`;
  const connector = await startConnector(pki, "connector-1", [deadRelay], 9, slowRetry);
  const agent = await startAgent(pki, "agent-1", [deadRelay], slowRetry);
  try {
    await Promise.all([exitDuringBackoff(connector), exitDuringBackoff(agent.proc)]);
  } finally {
    await Promise.allSettled(
      [connector, agent.proc].map((p) => p.stop("SIGTERM").catch(() => p.stop("SIGKILL"))),
    );
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("reconnection: SIGTERM while a dial to a dead relay is in its handshake exits without waiting for it", async () => {
  const pki = await createPki(["connector-1"]);
  const connector = await startConnector(pki, "connector-1", [`127.0.0.1:${freePort("udp")}`], 9);
  try {
    // The first dial waits up to its 10 s handshake timeout; stop in the middle of it.
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(!connector.logs.some((l) => l.msg === "relay link down, redialing"));
    // Waiting out the handshake would log the failed dial (and a redial) before stopping;
    // the 8 s guard ends before the handshake timeout could have fired.
    assert.equal(await connector.stop("SIGTERM", 8000), 0);
    const after = afterShutdown(connector);
    assert.ok(after.some((l) => l.msg === "stopped"), "stopped cleanly");
    assert.ok(
      !after.some((l) =>
        l.msg === "relay connection failed" || l.msg === "relay link down, redialing"
      ),
      `the dial was abandoned, not waited out: ${JSON.stringify(after.map((l) => l.msg))}`,
    );
  } finally {
    await connector.stop("SIGKILL").catch(() => {});
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
