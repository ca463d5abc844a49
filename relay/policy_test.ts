import assert from "node:assert/strict";
import { createPolicy } from "./policy.ts";

Deno.test("policy: default deny for unknown services and identities", () => {
  const policy = createPolicy({
    echo: { connectors: ["c1"], agents: ["a1", "a2"] },
    dns: { connectors: ["c2"], agents: [] },
  });
  assert.equal(policy.mayRegister("c1", "echo"), true);
  assert.equal(policy.mayRegister("c1", "dns"), false);
  assert.equal(policy.mayRegister("a1", "echo"), false, "agents may not serve");
  assert.equal(policy.mayOpen("a1", "echo"), true);
  assert.equal(policy.mayOpen("c1", "echo"), false, "connectors may not use");
  assert.equal(policy.mayOpen("a1", "dns"), false);
  assert.equal(policy.mayOpen("a1", "unknown"), false);
  assert.deepEqual(policy.servicesFor("a2"), ["echo"]);
});
