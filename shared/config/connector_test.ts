import assert from "node:assert/strict";
import { connectorConfigSchema } from "./connector.ts";

const tls = { cert: "c.pem", key: "c.key", ca: "ca.pem" };
const base = { relays: ["127.0.0.1:4433"], tls, services: { echo: "udp://127.0.0.1:7" } };

Deno.test("connectorConfigSchema", async (t) => {
  await t.step("fills defaults and normalizes services to lists", () => {
    const config = connectorConfigSchema.parse({
      ...base,
      services: { echo: "udp://127.0.0.1:7", dns: ["udp://127.0.0.1:53", "tcp://127.0.0.1:53"] },
    });
    assert.deepEqual(config.relays, [{ host: "127.0.0.1", port: 4433 }]);
    assert.deepEqual(config.metrics, { host: "127.0.0.1", port: 9091 });
    assert.equal(config.tls.server_name, "localhost");
    assert.deepEqual(config.services.echo, [{ protocol: "udp", host: "127.0.0.1", port: 7 }]);
    assert.deepEqual(config.services.dns.map((s) => s.protocol), ["udp", "tcp"]);
    assert.equal(config.flow_idle_ms, 60000);
    assert.deepEqual(config.reassembly, { max_bytes: 4194304, timeout_ms: 2000 });
    assert.equal(config.idle_timeout_ms, 30000);
    assert.equal(config.drain_ms, 3000);
    assert.equal(config.shutdown_timeout_ms, 10000);
    assert.equal(config.log_level, "info");
    assert.deepEqual(config.limits, {
      flows_per_agent: 1024,
      sessions_per_agent: 64,
      max_flows: 16384,
    });
    assert.deepEqual(config.hosts, {});
    assert.deepEqual(config.agents, {});
  });

  await t.step("hosts maps names to IP addresses only", () => {
    const hosts = { "db.internal": ["10.0.0.5", "fd00::5"] };
    assert.deepEqual(connectorConfigSchema.parse({ ...base, hosts }).hosts, hosts);
    const bad = connectorConfigSchema.safeParse({ ...base, hosts: { db: ["db.example"] } });
    assert.match(bad.error!.issues[0].message, /expected an IP address/);
    const zero = connectorConfigSchema.safeParse({ ...base, limits: { max_flows: 0 } });
    assert.deepEqual(zero.error!.issues[0].path, ["limits", "max_flows"]);
  });

  await t.step("requires at least one relay and one service", () => {
    const noRelays = connectorConfigSchema.safeParse({ ...base, relays: [] });
    assert.match(noRelays.error!.issues[0].message, /at least one relay/);
    const noServices = connectorConfigSchema.safeParse({ ...base, services: {} });
    assert.match(noServices.error!.issues[0].message, /at least one service/);
    const noBackends = connectorConfigSchema.safeParse({ ...base, services: { echo: [] } });
    assert.match(noBackends.error!.issues[0].message, /at least one backend/);
  });

  await t.step("rejects unknown keys and bad URLs", () => {
    const unknown = connectorConfigSchema.safeParse({ ...base, reassembly: { max: 1 } });
    assert.deepEqual(unknown.error!.issues[0].path, ["reassembly"]);
    const badUrl = connectorConfigSchema.safeParse({ ...base, services: { echo: "udp:/x" } });
    assert.match(badUrl.error!.issues[0].message, /expected udp:\/\/host:port/);
  });
});
