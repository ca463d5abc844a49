import assert from "node:assert/strict";
import { createFlowLimits, isOutOfFiles } from "./flow_limits.ts";

Deno.test("flow limits: opens without an agent share one budget; releases give places back", () => {
  const limits = createFlowLimits({ flowsPerAgent: 2, maxFlows: 3 });
  assert.equal(limits.acquire(undefined), null);
  assert.equal(limits.acquire(undefined), null);
  assert.equal(limits.acquire(undefined), "flows_per_agent", "older relays share 'unknown'");
  assert.equal(limits.acquire("unknown"), "flows_per_agent", "the same key");
  assert.equal(limits.acquire("alice"), null);
  assert.equal(limits.acquire("bob"), "max_flows");
  assert.equal(limits.total, 3);
  // A release for an identity holding nothing changes nothing (no negative budgets).
  limits.release("bob");
  assert.equal(limits.total, 3);
  limits.release(undefined);
  assert.equal(limits.acquire("bob"), null);
  assert.equal(limits.total, 3);
});

Deno.test("flow limits: EMFILE and ENFILE are descriptor shortages", () => {
  const error = (code: string) => Object.assign(new Error("x"), { code });
  assert.ok(isOutOfFiles(error("EMFILE")));
  assert.ok(isOutOfFiles(error("ENFILE")));
  assert.ok(!isOutOfFiles(error("ECONNREFUSED")));
  assert.ok(!isOutOfFiles(null));
});
