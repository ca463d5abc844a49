import assert from "node:assert/strict";
import { join } from "node:path";
import { auditFilePaths, type AuditSink, createAuditLog } from "./audit_log.ts";

const decoder = new TextDecoder();

Deno.test("audit log: a stalled destination never blocks write(); the overflow is counted", async () => {
  let release: () => void = () => {};
  const stalled = new Promise<void>((resolve) => release = resolve);
  const written: string[] = [];
  const sink: AuditSink = {
    async write(bytes) {
      await stalled;
      written.push(decoder.decode(bytes));
    },
    close() {},
  };
  const audit = createAuditLog({
    component: "relay",
    destination: { kind: "stdout" },
    maxQueue: 10,
    sink,
  });
  // The first record goes to the (stalled) sink; ten more fill the queue; the rest drop.
  for (let i = 0; i < 100; i++) audit.write("flow_open", { flow: i });
  assert.equal(audit.queued, 10);
  assert.equal(audit.dropped.queue_full, 89);
  assert.equal(await audit.flush(50), false, "flush is bounded while stalled");
  release();
  assert.equal(await audit.flush(2000), true);
  const lines = written.join("").trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.flow), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(audit.written.flow_open, 11);
});

Deno.test("audit log: a failing destination drops what it was given, counts it and is retried", async () => {
  let failing = true;
  const written: string[] = [];
  const audit = createAuditLog({
    component: "connector",
    destination: { kind: "stdout" },
    retryMs: 10,
    sink: {
      write(bytes) {
        if (failing) return Promise.reject(new Error("disk full"));
        written.push(decoder.decode(bytes));
        return Promise.resolve();
      },
      close() {},
    },
  });
  audit.write("register", { services: ["a"] });
  await audit.flush(1000);
  assert.equal(audit.dropped.write_error, 1);
  failing = false;
  audit.write("deregister", { services: ["a"] });
  assert.equal(await audit.flush(1000), true);
  assert.equal(JSON.parse(written[0]).audit, "deregister");
});

Deno.test("audit log: record keys cannot be overwritten and long peer text is cut", async () => {
  const written: string[] = [];
  const audit = createAuditLog({
    component: "relay",
    destination: { kind: "stdout" },
    fields: { relay_id: "r1" },
    sink: { write: (b) => Promise.resolve(void written.push(decoder.decode(b))), close() {} },
  });
  audit.write("flow_close", { audit: "forged", component: "forged", detail: "x".repeat(5000) });
  await audit.flush();
  const record = JSON.parse(written[0]);
  assert.equal(record.audit, "flow_close");
  assert.equal(record.component, "relay");
  assert.equal(record.detail.length, 512);
});

Deno.test("audit log: a file destination rotates by size and keeps `keep` files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "audit.jsonl");
    const audit = createAuditLog({
      component: "relay",
      destination: { kind: "file", path, maxBytes: 4096, keep: 2 },
    });
    for (let i = 0; i < 200; i++) {
      audit.write("flow_open", { flow: i, pad: "p".repeat(100) });
      // One record per write, so every rotation point is exercised.
      await audit.flush();
    }
    await audit.close();
    const sizes = auditFilePaths(path, 2).map((p) => Deno.statSync(p).size);
    for (const size of sizes) assert.ok(size > 0 && size <= 4096, `size ${size}`);
    assert.throws(() => Deno.statSync(`${path}.3`), Deno.errors.NotFound);
    // The newest record is last in the live file; the rotated ones are older, in order.
    const live = Deno.readTextFileSync(path).trim().split("\n").map((l) => JSON.parse(l).flow);
    const older = Deno.readTextFileSync(`${path}.1`).trim().split("\n").map((l) =>
      JSON.parse(l).flow
    );
    assert.equal(live.at(-1), 199);
    assert.equal(older.at(-1), live[0] - 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("audit log: off writes nothing and says so", () => {
  const audit = createAuditLog({ component: "agent", destination: { kind: "off" } });
  audit.write("flow_open", {});
  assert.equal(audit.enabled, false);
  assert.equal(audit.queued, 0);
});
