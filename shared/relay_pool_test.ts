import assert from "node:assert/strict";
import { createLogger } from "./log.ts";
import { runRelayPool } from "./relay_pool.ts";

Deno.test("relay pool: one link per resolved address, joins and leaves as DNS changes", async () => {
  const answers: string[][] = [["10.0.0.1", "10.0.0.2"], ["10.0.0.2", "10.0.0.3"]];
  let lookups = 0;
  const running = new Set<string>();
  const started: string[] = [];
  const stop = new AbortController();
  const pool = runRelayPool({
    relays: [{ host: "relays.internal", port: 4433 }, { host: "192.0.2.9", port: 4433 }],
    resolveIntervalMs: 20,
    signal: stop.signal,
    logger: createLogger("test", { write: () => {} }),
    resolve: (host) => {
      if (host === "192.0.2.9") return Promise.resolve([host]);
      const answer = answers[Math.min(lookups++, answers.length - 1)];
      // A failing lookup keeps the previous links.
      return lookups === 3 ? Promise.reject(new Error("SERVFAIL")) : Promise.resolve(answer);
    },
    startLink(address, signal) {
      const key = `${address.host}:${address.port}`;
      running.add(key);
      started.push(key);
      return new Promise((resolve) =>
        signal.addEventListener("abort", () => {
          running.delete(key);
          resolve();
        }, { once: true })
      );
    },
  });
  const deadline = Date.now() + 2000;
  while (lookups < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual([...running].sort(), ["10.0.0.2:4433", "10.0.0.3:4433", "192.0.2.9:4433"]);
  assert.deepEqual(started, ["10.0.0.1:4433", "10.0.0.2:4433", "192.0.2.9:4433", "10.0.0.3:4433"]);
  stop.abort();
  await pool;
  assert.equal(running.size, 0, "every link stopped");
});
