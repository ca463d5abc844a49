import assert from "node:assert/strict";
import { join } from "node:path";
import { PROJECT_ROOT } from "./permissions.ts";
import { modulesAlone, reaches, testModules } from "./run_tests.ts";

Deno.test("run_tests: modules driving QUIC endpoints in-process run alone, the rest share", () => {
  const modules = testModules();
  const at = (p: string) => join(PROJECT_ROOT, p);
  assert.ok(modules.includes(at("shared/quic/endpoint_test.ts")));
  assert.ok(modules.every((m) => !m.includes("/node_modules/")));
  const alone = modulesAlone(modules);
  assert.ok(alone.includes(at("shared/quic/endpoint_test.ts")));
  assert.ok(alone.includes(at("test/fault/relay_attack_test.ts")));
  // Spawns the components as processes, and the socket layer holds no quiche state.
  assert.ok(!alone.includes(at("test/e2e/udp_tunnel_test.ts")));
  assert.ok(!alone.includes(at("shared/quic/udp_socket_test.ts")));
  assert.equal(reaches(at("shared/quic/server.ts"), [at("shared/quic/server.ts")]), true);
});
