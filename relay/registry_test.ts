import assert from "node:assert/strict";
import { createServiceRegistry } from "./registry.ts";

Deno.test("registry: spreads flows, tracks service up/down, skips unusable sessions", () => {
  const registry = createServiceRegistry<string>();
  assert.equal(registry.add("echo", "udp", "c1"), true, "first connector brings the service up");
  assert.equal(registry.add("echo", "udp", "c2"), false);
  assert.equal(registry.add("echo", "tcp", "c2"), false);
  const picks = [1, 2, 3, 4].map(() => registry.pick("echo", "udp"));
  assert.deepEqual(picks, ["c1", "c2", "c1", "c2"]);
  assert.equal(registry.pick("echo", "udp", (s) => s !== "c1"), "c2");
  assert.equal(registry.connectors("echo"), 2, "c2 counts once for both protocols");
  assert.equal(registry.connectors("dns"), 0);
  assert.equal(registry.pick("echo", "udp", () => false), undefined);
  assert.equal(registry.pick("dns", "udp"), undefined);
  assert.deepEqual(registry.removeSession("c1"), []);
  assert.deepEqual(registry.removeSession("c2"), ["echo"]);
  assert.equal(registry.has("echo"), false);
  assert.equal(registry.size, 0);
});
