import assert from "node:assert/strict";
import { agentConfigSchema } from "./agent.ts";

const tls = { cert: "a.pem", key: "a.key", ca: "ca.pem", server_name: "relay.test" };
const base = {
  relays: ["[::1]:4433"],
  tls,
  forwards: [{ listen: "udp://127.0.0.1:5353", service: "dns" }],
};

Deno.test("agentConfigSchema", async (t) => {
  await t.step("fills defaults; metrics is off", () => {
    const config = agentConfigSchema.parse(base);
    assert.equal(config.metrics, null);
    assert.deepEqual(config.relays, [{ host: "::1", port: 4433 }]);
    assert.equal(config.tls.server_name, "relay.test");
    assert.deepEqual(config.forwards, [{
      listen: { protocol: "udp", host: "127.0.0.1", port: 5353 },
      service: "dns",
    }]);
    assert.equal(config.flow_idle_ms, 60000);
    assert.equal(config.reassembly.timeout_ms, 2000);
  });

  await t.step("requires forwards and rejects duplicate listen addresses", () => {
    const none = agentConfigSchema.safeParse({ ...base, forwards: [] });
    assert.match(none.error!.issues[0].message, /at least one forward/);
    const duplicate = agentConfigSchema.safeParse({
      ...base,
      forwards: [...base.forwards, { listen: "udp://127.0.0.1:5353", service: "other" }],
    });
    assert.deepEqual(duplicate.error!.issues[0].path, ["forwards", 1, "listen"]);
    const ephemeral = agentConfigSchema.safeParse({
      ...base,
      forwards: [
        { listen: "tcp://127.0.0.1:0", service: "a" },
        { listen: "tcp://127.0.0.1:0", service: "b" },
      ],
    });
    assert.equal(ephemeral.success, true);
  });

  await t.step("rejects unknown keys in a forward", () => {
    const result = agentConfigSchema.safeParse({
      ...base,
      forwards: [{ listen: "udp://127.0.0.1:1", service: "dns", port: 1 }],
    });
    assert.equal(result.error!.issues[0].code, "unrecognized_keys");
  });
});
