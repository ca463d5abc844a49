import assert from "node:assert/strict";
import { join } from "node:path";
import { loadComponentConfig, PROJECT_ROOT, runArgs } from "../tools/permissions.ts";
import {
  createPki,
  metric,
  portOf,
  relayConfig,
  scrape,
  spawnLogged,
  startComponent,
  startEchoService,
  udpClient,
} from "./harness.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sandboxWarning = "sandbox wider than the config needs";

Deno.test("sandbox: -A is reported, --strict-sandbox refuses it, derived flags are quiet", async (t) => {
  const pki = await createPki([]);
  const configPath = join(pki.dir, "relay.json");
  await Deno.writeTextFile(configPath, JSON.stringify(relayConfig(pki, {})));
  const allAccess = (extra: string[]) => [
    "run",
    `--config=${join(PROJECT_ROOT, "deno.json")}`,
    "-A",
    join(PROJECT_ROOT, "relay", "main.ts"),
    "--config",
    configPath,
    ...extra,
  ];
  try {
    await t.step("with -A the relay starts and logs the excess", async () => {
      const relay = await spawnLogged("relay -A", allAccess([]));
      try {
        const warning = await relay.waitForLog((l) => l.msg === sandboxWarning);
        assert.equal(warning.level, "warn");
        for (const excess of ["read", "write", "run", "env", "ffi", "sys"]) {
          assert.ok((warning.excess as string[]).includes(excess), `reports ${excess}`);
        }
        // The relay may hold unscoped network access: it answers peers from anywhere.
        assert.ok(!(warning.excess as string[]).includes("net"));
      } finally {
        assert.equal(await relay.stop(), 0);
      }
    });

    await t.step("with -A and --strict-sandbox it exits 2 before binding", async () => {
      const relay = await spawnLogged("relay strict", allAccess(["--strict-sandbox"]), {
        waitReady: false,
      });
      const status = await relay.status;
      assert.equal(status.code, 2);
      assert.ok(
        relay.logs.some((l) => l.level === "error" && String(l.msg).startsWith(sandboxWarning)),
      );
      assert.ok(!relay.logs.some((l) => l.msg === "ready"), "nothing bound");
    });

    await t.step(
      "with the derived flags and strict_sandbox it runs without a warning",
      async () => {
        const relay = await startComponent("relay", {
          ...relayConfig(pki, {}),
          strict_sandbox: true,
        });
        try {
          assert.ok(!relay.logs.some((l) => l.msg === sandboxWarning));
        } finally {
          assert.equal(await relay.stop(), 0);
        }
      },
    );
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("sandbox: a connector cannot reach a backend outside its derived flags", async () => {
  const pki = await createPki(["connector-1", "agent-1"]);
  const echo = await startEchoService();
  // Stands for a private host the connector was never meant to reach; it must see nothing.
  const outside = udpClient();
  const procs = [echo.proc];
  try {
    const both = { connectors: ["connector-1"], agents: ["agent-1"] };
    const relay = await startComponent("relay", relayConfig(pki, { echo: both, secret: both }));
    procs.push(relay);
    const relayAddress = String(relay.ready.quic);

    // The sandbox is derived from the config file, which names only the echo backend...
    const fileConfig = {
      relays: [relayAddress],
      metrics: "127.0.0.1:0",
      tls: pki.tls("connector-1"),
      services: { echo: `udp://127.0.0.1:${echo.port}` },
      drain_ms: 200,
    };
    const configPath = join(pki.dir, "connector.json");
    await Deno.writeTextFile(configPath, JSON.stringify(fileConfig));
    const args = ["--config", configPath];
    const { config } = loadComponentConfig("connector", args, {});
    const flags = runArgs("connector", config, configPath, args);
    assert.ok(!flags.some((f) => f.startsWith("--allow-net=") && f.includes(`:${outside.port}`)));
    // ...while an environment override the launcher never saw adds a backend outside it.
    const connector = await spawnLogged("connector", flags, {
      env: {
        ZTNA_SERVICES: JSON.stringify({
          echo: `udp://127.0.0.1:${echo.port}`,
          secret: `udp://127.0.0.1:${outside.port}`,
        }),
      },
    });
    procs.push(connector);
    await connector.waitForLog((l) => l.msg === "registered");

    const agent = await startComponent("agent", {
      relays: [relayAddress],
      tls: pki.tls("agent-1"),
      forwards: [
        { listen: "udp://127.0.0.1:0", service: "echo" },
        { listen: "udp://127.0.0.1:0", service: "secret" },
      ],
      drain_ms: 200,
    });
    procs.push(agent);
    await agent.waitForLog((l) => l.msg === "relay link up");
    const [echoPort, secretPort] = (agent.ready.listen as string[]).map(portOf);

    const app = udpClient();
    try {
      await app.send(enc.encode("through the sandbox"), secretPort);
      const refusal = await agent.waitForLog((l) => l.msg === "relay refused flow");
      assert.equal(refusal.reason, "backend_error");
      const logged = await connector.waitForLog((l) =>
        l.msg === "backend outside the sandbox: refusing flow"
      );
      assert.equal(logged.backend, `127.0.0.1:${outside.port}`);
      assert.equal(await outside.receive(300), null, "nothing reached the outside address");
      const samples = await scrape(String(connector.ready.metrics));
      assert.equal(
        metric(samples, 'ztna_connector_backend_errors_total{reason="not_permitted"}'),
        1,
      );

      // The configured backend still works, through the same connector process.
      await app.send(enc.encode("allowed"), echoPort);
      assert.equal(dec.decode((await app.receive(3000))!), "allowed");
      assert.ok(!connector.stderr.some((l) => /NotCapable|Requires net access/.test(l)));
    } finally {
      app.close();
    }
  } finally {
    outside.close();
    await Promise.allSettled(procs.reverse().map((p) => p.stop()));
    await Deno.remove(pki.dir, { recursive: true });
  }
});
