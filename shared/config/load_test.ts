import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { agentConfigSchema } from "./agent.ts";
import { connectorConfigSchema } from "./connector.ts";
import { ConfigError, type ConfigSource, loadConfig } from "./load.ts";
import { relayConfigSchema } from "./relay.ts";

const tlsFile = { tls: { cert: "f.pem", key: "f.key", ca: "f-ca.pem" } };

/** A source whose config file (if any) is `/etc/ztna.json` with `file` as content. */
function source(args: string[], env: Record<string, string> = {}, file?: unknown): ConfigSource {
  return {
    args,
    env: file === undefined ? env : { ZTNA_CONFIG: "/etc/ztna.json", ...env },
    readFile: (path) => {
      if (path !== "/etc/ztna.json" || file === undefined) throw new Error(`not found: ${path}`);
      return typeof file === "string" ? file : JSON.stringify(file);
    },
  };
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

Deno.test("loadConfig() precedence", async (t) => {
  await t.step("defaults apply when nothing is set", () => {
    const config = loadConfig(relayConfigSchema, source([], {}, tlsFile));
    assert.deepEqual(config.listen, { host: "0.0.0.0", port: 4433 });
    assert.equal(config.limits.max_connections, 10000);
  });

  await t.step("file overrides defaults, env overrides file, flags override env", () => {
    const file = { ...tlsFile, listen: "127.0.0.1:1", drain_ms: 1, limits: { max_connections: 1 } };
    const fileOnly = loadConfig(relayConfigSchema, source([], {}, file));
    assert.deepEqual(fileOnly.listen, { host: "127.0.0.1", port: 1 });
    assert.equal(fileOnly.drain_ms, 1);
    assert.equal(fileOnly.limits.max_connections, 1);
    assert.equal(fileOnly.limits.flows_per_connection, 1024);

    const env = {
      ZTNA_LISTEN: "127.0.0.1:2",
      ZTNA_LIMITS_MAX_CONNECTIONS: "2",
      ZTNA_TLS_CERT: "e.pem",
    };
    const withEnv = loadConfig(relayConfigSchema, source([], env, file));
    assert.deepEqual(withEnv.listen, { host: "127.0.0.1", port: 2 });
    assert.equal(withEnv.limits.max_connections, 2);
    assert.equal(withEnv.drain_ms, 1);
    assert.deepEqual(withEnv.tls, { cert: "e.pem", key: "f.key", ca: "f-ca.pem" });

    const args = ["--listen=127.0.0.1:3", "--limits.max_connections", "3"];
    const withFlags = loadConfig(relayConfigSchema, source(args, env, file));
    assert.deepEqual(withFlags.listen, { host: "127.0.0.1", port: 3 });
    assert.equal(withFlags.limits.max_connections, 3);
    assert.equal(withFlags.tls.cert, "e.pem");
    assert.equal(withFlags.drain_ms, 1);
  });

  await t.step("--config overrides ZTNA_CONFIG", () => {
    const config = loadConfig(relayConfigSchema, {
      args: ["--config", "/b.json"],
      env: { ZTNA_CONFIG: "/a.json" },
      readFile: (path) => JSON.stringify({ ...tlsFile, drain_ms: path === "/b.json" ? 2 : 1 }),
    });
    assert.equal(config.drain_ms, 2);
  });

  await t.step("JSON values for records, numbers and lists; repeated list flags", () => {
    const services = '{"echo":{"connectors":["c1"],"agents":["a1"]}}';
    const relay = loadConfig(
      relayConfigSchema,
      source(["--services", services, "--tls.cert=x", "--tls.key=y", "--tls.ca=z"]),
    );
    assert.deepEqual(relay.services, { echo: { connectors: ["c1"], agents: ["a1"] } });

    const connector = loadConfig(
      connectorConfigSchema,
      source(
        ["--relays", "127.0.0.1:1", "--relays", '["127.0.0.1:2","[::1]:3"]'],
        { ZTNA_SERVICES: '{"echo":"udp://127.0.0.1:7"}', ZTNA_RELAYS: "127.0.0.9:9" },
        tlsFile,
      ),
    );
    assert.deepEqual(connector.relays.map((r) => r.port), [1, 2, 3]);
    assert.equal(connector.services.echo[0].port, 7);

    const agent = loadConfig(
      agentConfigSchema,
      source([], {
        ZTNA_RELAYS: "127.0.0.1:1,127.0.0.1:2",
        ZTNA_FORWARDS: '[{"listen":"tcp://127.0.0.1:0","service":"echo"}]',
        ZTNA_TLS_SERVER_NAME: "relay.test",
        ZTNA_REASSEMBLY_TIMEOUT_MS: "50",
      }, tlsFile),
    );
    assert.equal(agent.relays.length, 2);
    assert.equal(agent.forwards[0].listen.protocol, "tcp");
    assert.equal(agent.tls.server_name, "relay.test");
    assert.equal(agent.reassembly.timeout_ms, 50);
  });

  await t.step("ignores unknown ZTNA_* variables", () => {
    const config = loadConfig(relayConfigSchema, source([], { ZTNA_NOT_A_FIELD: "x" }, tlsFile));
    assert.equal(config.drain_ms, 3000);
  });

  await t.step("a boolean flag without a value is true", () => {
    const schema = z.object({ verbose: z.boolean().prefault(false), n: z.number().prefault(0) });
    assert.deepEqual(loadConfig(schema, source(["--verbose", "--n", "1"])), {
      verbose: true,
      n: 1,
    });
    assert.deepEqual(loadConfig(schema, source(["--verbose=false"])), { verbose: false, n: 0 });
  });
});

Deno.test("loadConfig() errors name the field and its source", async (t) => {
  await t.step("a bad value from each source", () => {
    const fromFile = configError(() =>
      loadConfig(relayConfigSchema, source([], {}, { ...tlsFile, listen: "nope" }))
    );
    assert.equal(fromFile.field, "listen");
    assert.equal(fromFile.source, "file");
    assert.match(fromFile.detail, /expected host:port, e\.g\. 127\.0\.0\.1:4433/);
    assert.match(fromFile.message, /^listen \(from file\): expected host:port/);

    const fromEnv = configError(() =>
      loadConfig(relayConfigSchema, source([], { ZTNA_LIMITS_MAX_CONNECTIONS: "many" }, tlsFile))
    );
    assert.equal(fromEnv.field, "limits.max_connections");
    assert.equal(fromEnv.source, "env");

    const fromFlag = configError(() =>
      loadConfig(relayConfigSchema, source(["--tls.cert="], { ZTNA_TLS_CERT: "ok" }, tlsFile))
    );
    assert.equal(fromFlag.field, "tls.cert");
    assert.equal(fromFlag.source, "flag");
  });

  await t.step("nested paths inside a JSON value name the element and the source", () => {
    const services = '{"echo":{"connectors":["c"],"agents":["a",""]}}';
    const error = configError(() =>
      loadConfig(relayConfigSchema, source(["--services", services], {}, tlsFile))
    );
    assert.equal(error.field, "services.echo.agents[1]");
    assert.equal(error.source, "flag");

    const fromFile = configError(() =>
      loadConfig(
        connectorConfigSchema,
        source([], {}, { ...tlsFile, relays: ["127.0.0.1:1"], services: { echo: "udp:/x" } }),
      )
    );
    assert.equal(fromFile.field, "services.echo[0]");
    assert.equal(fromFile.source, "file");
  });

  await t.step("a missing required field names the leaf and how to set it", () => {
    const error = configError(() => loadConfig(relayConfigSchema, source([])));
    assert.equal(error.field, "tls.cert");
    assert.equal(error.source, "default");
    assert.match(
      error.detail,
      /^required: set it in the config file, ZTNA_TLS_CERT or --tls\.cert/,
    );

    const partial = configError(() =>
      loadConfig(relayConfigSchema, source([], {}, { tls: { cert: "c", ca: "a" } }))
    );
    assert.equal(partial.field, "tls.key");
  });

  await t.step("unknown keys in the file are rejected by name", () => {
    const top = configError(() =>
      loadConfig(relayConfigSchema, source([], {}, { ...tlsFile, listn: "0.0.0.0:1" }))
    );
    assert.equal(top.field, "listn");
    assert.equal(top.source, "file");
    assert.match(top.detail, /^unknown key/);

    const nested = configError(() =>
      loadConfig(relayConfigSchema, source([], {}, { ...tlsFile, limits: { max_conns: 1 } }))
    );
    assert.equal(nested.field, "limits.max_conns");
  });

  await t.step("bad service names are reported with the key", () => {
    const error = configError(() =>
      loadConfig(
        relayConfigSchema,
        source([], {}, { ...tlsFile, services: { "Bad Name": { connectors: [], agents: [] } } }),
      )
    );
    assert.equal(error.field, 'services["Bad Name"]');
    assert.match(error.detail, /service name must match/);
  });

  await t.step("unknown flags, positional arguments and missing flag values", () => {
    const unknown = configError(() => loadConfig(relayConfigSchema, source(["--listne=x"])));
    assert.equal(unknown.field, "--listne");
    assert.equal(unknown.source, "flag");
    assert.match(unknown.detail, /^unknown flag; known flags: --config, --listen/);
    const objectFlag = configError(() => loadConfig(relayConfigSchema, source(["--tls", "{}"])));
    assert.equal(objectFlag.field, "--tls");
    const positional = configError(() => loadConfig(relayConfigSchema, source(["relay.json"])));
    assert.equal(positional.field, "relay.json");
    const noValue = configError(() => loadConfig(relayConfigSchema, source(["--listen"])));
    assert.match(noValue.message, /^--listen \(from flag\): flag needs a value/);
  });

  await t.step("missing, unreadable or non-JSON config files", () => {
    const missing = configError(() =>
      loadConfig(relayConfigSchema, source(["--config", "/nope.json"]))
    );
    assert.equal(missing.field, "config");
    assert.equal(missing.source, "flag");
    assert.match(missing.detail, /cannot read config file \/nope\.json/);

    const fromEnv = configError(() =>
      loadConfig(relayConfigSchema, {
        args: [],
        env: { ZTNA_CONFIG: "/x.json" },
        readFile: () => "{",
      })
    );
    assert.equal(fromEnv.source, "env");
    assert.match(fromEnv.detail, /config file \/x\.json is not valid JSON/);

    const notObject = configError(() => loadConfig(relayConfigSchema, source([], {}, "[1]")));
    assert.match(notObject.detail, /must hold a JSON object/);
  });

  await t.step("counts further problems", () => {
    const error = configError(() =>
      loadConfig(relayConfigSchema, source([], {}, { ...tlsFile, listen: "x", drain_ms: -1 }))
    );
    assert.match(error.detail, /\(and 1 more problem\)$/);
  });
});

Deno.test("loadConfigOrExit() exits 2 with one stderr line naming the field", async (t) => {
  const fixture = fileURLToPath(new URL("./testdata/load_or_exit.ts", import.meta.url));
  const run = (args: string[], env: Record<string, string>) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-env", "--allow-read", fixture, ...args],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();

  await t.step("bad config", async () => {
    const { code, stdout, stderr } = await run(["--limits.max_frame_bytes=0"], {
      ZTNA_TLS_CERT: "c.pem",
      ZTNA_TLS_KEY: "k.pem",
      ZTNA_TLS_CA: "ca.pem",
    });
    const text = new TextDecoder().decode(stderr);
    assert.equal(code, 2, text);
    assert.equal(new TextDecoder().decode(stdout), "");
    const lines = text.trimEnd().split("\n");
    assert.equal(lines.length, 1, text);
    assert.match(
      lines[0],
      /^ztna relay: invalid config: limits\.max_frame_bytes \(from flag\): Too small/,
    );
  });

  await t.step("good config", async () => {
    const { code, stdout, stderr } = await run(["--listen", "127.0.0.1:0"], {
      ZTNA_TLS_CERT: "c.pem",
      ZTNA_TLS_KEY: "k.pem",
      ZTNA_TLS_CA: "ca.pem",
    });
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(stdout)), {
      listen: { host: "127.0.0.1", port: 0 },
    });
  });
});
