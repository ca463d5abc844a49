import assert from "node:assert/strict";
import { join } from "node:path";
import { PROJECT_ROOT } from "../../tools/permissions.ts";
import { createPki } from "../_support/harness.ts";

async function run(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: PROJECT_ROOT,
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("config: invalid input exits 2 naming the field, before anything binds", async (t) => {
  const pki = await createPki([]);
  const write = async (name: string, config: unknown) => {
    const path = join(pki.dir, name);
    await Deno.writeTextFile(path, typeof config === "string" ? config : JSON.stringify(config));
    return path;
  };
  try {
    await t.step("through the sandbox launcher (deno task relay)", async () => {
      const path = await write("bad-listen.json", { listen: "nowhere", tls: pki.tls("relay") });
      const { code, stderr } = await run(["task", "relay", "--config", path]);
      assert.equal(code, 2);
      assert.match(stderr, /ztna relay: invalid config: listen \(from file\)/);
    });
    await t.step("a flag naming an unknown key", async () => {
      const path = await write("ok.json", { tls: pki.tls("relay") });
      const { code, stderr } = await run(["task", "relay", "--config", path, "--listne=1"]);
      assert.equal(code, 2);
      assert.match(stderr, /listne/);
    });
    await t.step("a connector service URL of the wrong scheme", async () => {
      const path = await write("connector.json", {
        relays: ["127.0.0.1:4433"],
        tls: pki.tls("relay"),
        services: { echo: "http://127.0.0.1:80" },
      });
      const { code, stderr } = await run(["task", "connector", "--config", path]);
      assert.equal(code, 2);
      assert.match(stderr, /services\.echo\[0\]/);
    });
    await t.step("a TLS file that does not exist (component itself)", async () => {
      const path = await write("missing-cert.json", {
        listen: "127.0.0.1:0",
        metrics: "off",
        tls: { ...pki.tls("relay"), cert: join(pki.dir, "nope.pem") },
      });
      const { code, stderr } = await run([
        "run",
        "--allow-read",
        "--allow-env",
        "--allow-net=127.0.0.1",
        "--allow-ffi",
        "relay/main.ts",
        "--config",
        path,
      ]);
      assert.equal(code, 2);
      assert.match(stderr, /invalid config: cannot read tls\.cert .*nope\.pem/);
    });
    await t.step("an audit file destination without a file", async () => {
      const path = await write("audit.json", {
        tls: pki.tls("relay"),
        audit: { destination: "file" },
      });
      const { code, stderr } = await run(["task", "relay", "--config", path]);
      assert.equal(code, 2);
      assert.match(stderr, /invalid config: audit\.file \(from file\): required when/);
    });
    await t.step("an audit destination that does not exist (environment)", async () => {
      const path = await write("ok-audit.json", { tls: pki.tls("relay") });
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["task", "relay", "--config", path],
        cwd: PROJECT_ROOT,
        stdout: "null",
        stderr: "piped",
        env: { NO_COLOR: "1", ZTNA_AUDIT_DESTINATION: "syslog" },
      }).output();
      assert.equal(out.code, 2);
      assert.match(new TextDecoder().decode(out.stderr), /audit\.destination \(from env/);
    });
    await t.step("a config file that is not JSON", async () => {
      const path = await write("broken.json", "{ listen: ");
      const { code, stderr } = await run(["task", "agent", "--config", path]);
      assert.equal(code, 2);
      assert.match(
        stderr,
        /invalid config: config \(from flag\): config file .* is not valid JSON/,
      );
    });
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("bind: a busy address is one line naming it and its key, exit 3", async (t) => {
  const pki = await createPki(["agent-1"]);
  const write = async (name: string, config: unknown) => {
    const path = join(pki.dir, name);
    await Deno.writeTextFile(path, JSON.stringify(config));
    return path;
  };
  const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const udpPort = (udp.addr as Deno.NetAddr).port;
  const tcpPort = (tcp.addr as Deno.NetAddr).port;
  try {
    await t.step("the relay's QUIC port", async () => {
      const path = await write("relay.json", {
        listen: `127.0.0.1:${udpPort}`,
        metrics: "127.0.0.1:0",
        tls: pki.tls("relay"),
      });
      const { code, stderr } = await run(["task", "relay", "--config", path]);
      assert.equal(code, 3, stderr);
      const lines = stderr.trim().split("\n").filter((l) => !l.startsWith("Task "));
      assert.deepEqual(lines, [
        `ztna relay: cannot bind 127.0.0.1:${udpPort}: address already in use (from listen)`,
      ]);
    });
    await t.step("the relay's metrics port", async () => {
      const path = await write("relay-metrics.json", {
        listen: "127.0.0.1:0",
        metrics: `127.0.0.1:${tcpPort}`,
        tls: pki.tls("relay"),
      });
      const { code, stderr } = await run(["task", "relay", "--config", path]);
      assert.equal(code, 3, stderr);
      assert.match(
        stderr,
        new RegExp(`cannot bind 127\\.0\\.0\\.1:${tcpPort}: .*\\(from metrics\\)`),
      );
    });
    await t.step("an agent's TCP forward", async () => {
      const path = await write("agent.json", {
        relays: ["127.0.0.1:4433"],
        metrics: "off",
        tls: pki.tls("agent-1"),
        forwards: [
          { listen: "udp://127.0.0.1:0", service: "dns" },
          { listen: `tcp://127.0.0.1:${tcpPort}`, service: "web" },
        ],
      });
      const { code, stderr } = await run(["task", "agent", "--config", path]);
      assert.equal(code, 3, stderr);
      assert.match(
        stderr,
        new RegExp(`cannot bind 127\\.0\\.0\\.1:${tcpPort}: .*\\(from forwards\\[1\\]\\.listen\\)`),
      );
    });
  } finally {
    udp.close();
    tcp.close();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
