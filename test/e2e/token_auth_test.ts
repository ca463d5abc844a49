import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { tokenHashText } from "../../shared/config/tokens.ts";
import {
  type ComponentProcess,
  createPki,
  metric,
  portOf,
  scrape,
  startComponent,
  startEchoService,
  udpClient,
} from "../_support/harness.ts";
import { waitFor } from "../_support/wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const token = () => `ztna-${randomBytes(18).toString("hex")}`;

Deno.test("token auth: accepted, wrong token refused and counted, SIGHUP rotation, never logged", async (t) => {
  // Token-only deployment: the relay has a certificate, clients only the CA and a token.
  const pki = await createPki([]);
  const tokens = {
    connector: token(),
    old: token(),
    fresh: token(),
    wrong: token(),
  };
  const file = async (name: string, value: string) => {
    const path = join(pki.dir, `${name}.token`);
    await Deno.writeTextFile(path, `${value}\n`);
    return `file:${path}`;
  };
  // The connector's token comes from the environment (its sandbox gets exactly that variable).
  Deno.env.set("ZTNA_TEST_CONNECTOR_TOKEN", tokens.connector);
  const echo = await startEchoService();
  const procs: ComponentProcess[] = [echo.proc];
  const client = udpClient();
  try {
    const relayConfig = (agentTokens: string[]) => ({
      listen: "127.0.0.1:0",
      metrics: "127.0.0.1:0",
      tls: pki.tls("relay"),
      auth: "token",
      tokens: {
        // The relay reads the connector's token from a file, hashes it and forgets it.
        "connector-1": [`file:${join(pki.dir, "connector-copy.token")}`],
        "agent-1": agentTokens.map(tokenHashText),
      },
      services: { echo: { connectors: ["connector-1"], agents: ["agent-1"] } },
      drain_ms: 200,
    });
    await file("connector-copy", tokens.connector);
    const relay = await startComponent("relay", relayConfig([tokens.old]));
    procs.push(relay);
    const relayAddress = String(relay.ready.quic);
    const metrics = String(relay.ready.metrics);
    const clientTls = { ca: join(pki.dir, "ca.pem") };

    const connector = await startComponent("connector", {
      relays: [relayAddress],
      metrics: "127.0.0.1:0",
      tls: clientTls,
      token: "env:ZTNA_TEST_CONNECTOR_TOKEN",
      services: { echo: `udp://127.0.0.1:${echo.port}` },
      drain_ms: 200,
    });
    procs.push(connector);
    await connector.waitForLog((l) => l.msg === "registered");

    const startAgent = async (tokenRef: string) => {
      const agent = await startComponent("agent", {
        relays: [relayAddress],
        tls: clientTls,
        token: tokenRef,
        forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
        drain_ms: 200,
      });
      procs.push(agent);
      return agent;
    };
    const roundTrip = async (agent: ComponentProcess, text: string) => {
      await agent.waitForLog((l) => l.msg === "relay link up");
      await client.send(enc.encode(text), portOf((agent.ready.listen as string[])[0]));
      assert.equal(dec.decode((await client.receive(3000)) ?? new Uint8Array()), text);
    };
    const badTokens = async () =>
      metric(await scrape(metrics), 'ztna_relay_auth_failures_total{reason="bad_token"}');

    const oldAgent = await startAgent(await file("old", tokens.old));
    await t.step("a listed token authenticates its identity end to end", async () => {
      await roundTrip(oldAgent, "token works");
      const up = await oldAgent.waitForLog((l) => l.msg === "relay link up");
      assert.equal(up.identity, "agent-1");
    });

    await t.step("a wrong token is refused and counted", async () => {
      const intruder = await startAgent(await file("wrong", tokens.wrong));
      const failed = await intruder.waitForLog((l) => l.msg === "relay connection failed");
      assert.match(String(failed.reason), /code 2 \(bad_token\)/);
      await waitFor("bad_token counted", async () => (await badTokens()) >= 1);
      const logged = await relay.waitForLog((l) =>
        l.msg === "authentication failed: closing connection"
      );
      assert.equal(logged.reason, "bad_token");
      await intruder.stop();
    });

    await t.step("SIGHUP rotation: old and new valid together, then only the new", async () => {
      await Deno.writeTextFile(
        relay.configPath!,
        JSON.stringify(relayConfig([tokens.old, tokens.fresh])),
      );
      relay.signal("SIGHUP");
      await waitFor("reload", () => relay.logs.filter((l) => l.msg === "reloaded").length === 1);
      const fresh = await startAgent(await file("fresh", tokens.fresh));
      await roundTrip(fresh, "new token");
      const oldAgain = await startAgent(await file("old", tokens.old));
      await roundTrip(oldAgain, "old token during rotation");
      await oldAgain.stop();

      await Deno.writeTextFile(relay.configPath!, JSON.stringify(relayConfig([tokens.fresh])));
      relay.signal("SIGHUP");
      await waitFor("reload", () => relay.logs.filter((l) => l.msg === "reloaded").length === 2);
      const before = await badTokens();
      const retired = await startAgent(await file("old", tokens.old));
      await retired.waitForLog((l) => l.msg === "relay connection failed");
      await waitFor("retired token refused", async () => (await badTokens()) > before);
      await retired.stop();
      // Established sessions are not cut by a rotation; new dials need the new token.
      await roundTrip(oldAgent, "established session survives");
      await roundTrip(fresh, "new token after rotation");
    });

    await t.step("no token value appears in any log line of any process", async () => {
      const health = await (await fetch(`http://${metrics}/health`)).text();
      const exposition = await (await fetch(`http://${metrics}/metrics`)).text();
      for (const value of Object.values(tokens)) {
        assert.ok(!health.includes(value) && !exposition.includes(value));
      }
      // Stopped first, so shutdown lines are in the captured logs too.
      await Promise.allSettled([...procs].reverse().map((p) => p.stop()));
      for (const proc of procs) {
        const text = JSON.stringify(proc.logs) + proc.stderr.join("\n");
        for (const [name, value] of Object.entries(tokens)) {
          assert.ok(!text.includes(value), `${proc.name} logged the ${name} token`);
        }
      }
    });
  } finally {
    client.close();
    Deno.env.delete("ZTNA_TEST_CONNECTOR_TOKEN");
    await Promise.allSettled(procs.reverse().map((p) => p.stop()));
    await Deno.remove(pki.dir, { recursive: true });
  }
});
