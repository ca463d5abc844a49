import assert from "node:assert/strict";
import { join } from "node:path";
import {
  dialedNames,
  loadComponentConfig,
  PROJECT_ROOT,
  resolveNames,
  runArgs,
} from "../../tools/permissions.ts";
import {
  createPki,
  metric,
  portOf,
  scrape,
  spawnLogged,
  startComponent,
  startEchoService,
  udpClient,
} from "../_support/harness.ts";
import { relayConfig } from "../_support/trio.ts";
import { echoTcp, startTcpServer } from "../_support/tcp_util.ts";

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

Deno.test("sandbox: a backend named by host name is granted on its port, not the whole host", async () => {
  const pki = await createPki(["connector-1", "agent-1"]);
  const served = startTcpServer(echoTcp);
  // Another service on the same host: the sandbox must not let the connector reach it.
  let reachedOther = 0;
  const other = startTcpServer((conn) => (reachedOther++, echoTcp(conn)));
  const procs = [];
  try {
    const both = { connectors: ["connector-1"], agents: ["agent-1"] };
    const relay = await startComponent("relay", relayConfig(pki, { wiki: both, other: both }));
    procs.push(relay);
    const relayAddress = String(relay.ready.quic);
    const configPath = join(pki.dir, "connector.json");
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        relays: [relayAddress],
        metrics: "127.0.0.1:0",
        tls: pki.tls("connector-1"),
        services: { wiki: `tcp://localhost:${served.port}` },
        drain_ms: 200,
      }),
    );
    // Derived as the launcher does: names resolved at launch, then the flags.
    const args = ["--config", configPath];
    const { config } = loadComponentConfig("connector", args, {});
    const flags = runArgs(
      "connector",
      config,
      configPath,
      args,
      await resolveNames(dialedNames("connector", config)),
    );
    const net = flags.find((f) => f.startsWith("--allow-net="))!.split("=")[1].split(",");
    assert.ok(!net.includes("localhost"), `no bare host in ${net}`);
    assert.ok(net.includes(`localhost:${served.port}`) && net.includes(`127.0.0.1:${served.port}`));
    const connector = await spawnLogged("connector", flags, {
      env: {
        ZTNA_SERVICES: JSON.stringify({
          wiki: `tcp://localhost:${served.port}`,
          other: `tcp://localhost:${other.port}`,
        }),
      },
    });
    procs.push(connector);
    await connector.waitForLog((l) => l.msg === "registered");
    const agent = await startComponent("agent", {
      relays: [relayAddress],
      tls: pki.tls("agent-1"),
      forwards: [
        { listen: "tcp://127.0.0.1:0", service: "wiki" },
        { listen: "tcp://127.0.0.1:0", service: "other" },
      ],
      drain_ms: 200,
    });
    procs.push(agent);
    await agent.waitForLog((l) => l.msg === "relay link up");
    const [wikiPort, otherPort] = (agent.ready.listen as string[]).map(portOf);

    const exchange = async (port: number) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(enc.encode("ping"));
        const buffer = new Uint8Array(8);
        const n = await conn.read(buffer);
        return n === null ? null : dec.decode(buffer.subarray(0, n));
      } finally {
        conn.close();
      }
    };
    assert.equal(await exchange(wikiPort), "ping", "the configured port works by name");
    assert.equal(await exchange(otherPort), null, "another port of the same host is refused");
    const logged = await connector.waitForLog((l) =>
      l.msg === "backend outside the sandbox: refusing flow"
    );
    assert.equal(logged.backend, `localhost:${other.port}`);
    const samples = await scrape(String(connector.ready.metrics));
    assert.equal(metric(samples, 'ztna_connector_backend_errors_total{reason="not_permitted"}'), 1);
    const refusal = await agent.waitForLog((l) => l.msg === "relay refused flow");
    assert.equal(refusal.reason, "backend_error");
    assert.equal(metric(samples, 'ztna_connector_flows_opened_total{protocol="tcp"}'), 1);

    // The sandbox itself, not just the connector's check: code running under these flags
    // may connect to the configured port by name, and to no other port of that host.
    const probe = join(pki.dir, "probe.ts");
    await Deno.writeTextFile(
      probe,
      `for (const port of Deno.args.map(Number)) {
         try { (await Deno.connect({ hostname: "localhost", port })).close(); console.log("ok"); }
         catch (e) { console.log(e instanceof Deno.errors.NotCapable ? "refused" : String(e)); }
       }`,
    );
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        ...flags.filter((f) => f.startsWith("--allow-")),
        probe,
        String(served.port),
        String(other.port),
      ],
      stdout: "piped",
    }).output();
    assert.deepEqual(dec.decode(output.stdout).trim().split("\n"), ["ok", "refused"]);
    assert.equal(reachedOther, 0, "nothing ever connected to the other port");
  } finally {
    await Promise.allSettled(procs.reverse().map((p) => p.stop()));
    await served.close();
    await other.close();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
