import assert from "node:assert/strict";
import { join } from "node:path";
import { PROJECT_ROOT } from "../../tools/permissions.ts";
import { metric, scrape, udpClient } from "../_support/harness.ts";
import { startTunnel } from "../_support/trio.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Local addresses of this namespace's UDP sockets on `port` (from `ss`). */
async function udpLocalAddresses(port: number): Promise<string[]> {
  const out = await new Deno.Command("ss", { args: ["-Huan", `sport = :${port}`] }).output();
  return dec.decode(out.stdout).trim().split("\n").filter((l) => l !== "").map((line) =>
    line.trim().split(/\s+/)[3]
  );
}

Deno.test("connector bind: a loopback backend's flow socket binds loopback, not the wildcard", async () => {
  await using tunnel = await startTunnel({ connectorLogLevel: "debug" });
  const client = udpClient();
  const intruder = udpClient("127.0.0.3");
  try {
    await client.send(enc.encode("hello"), tunnel.agentPort);
    assert.equal(dec.decode((await client.receive(3000))!), "hello");
    const chosen = await tunnel.connector.waitForLog((l) => l.msg === "backend bind address");
    assert.equal(chosen.bind, "127.0.0.1");
    assert.equal(chosen.reason, "loopback");
    const opened = await tunnel.connector.waitForLog((l) => l.msg === "flow opened");
    const [host, port] = String(opened.backend_socket).split(":");
    assert.equal(host, "127.0.0.1");
    assert.deepEqual(await udpLocalAddresses(Number(port)), [`127.0.0.1:${port}`]);

    // 127.0.0.2 is another address of this host: a wildcard socket would take this datagram.
    await intruder.send(enc.encode("to the other address"), Number(port), "127.0.0.2");
    assert.equal(await client.receive(500), null, "nothing reached the agent's client");
    const samples = await scrape(String(tunnel.connector.ready.metrics));
    assert.equal(metric(samples, 'ztna_connector_datagrams_total{direction="from_backend"}'), 1);
    assert.equal(
      metric(samples, 'ztna_connector_source_validation_rejects_total{service="echo"}'),
      0,
      "the socket never saw it",
    );
    await client.send(enc.encode("still fine"), tunnel.agentPort);
    assert.equal(dec.decode((await client.receive(3000))!), "still fine");
  } finally {
    client.close();
    intruder.close();
  }
});

/** Runs `ip` with `args`; throws with its stderr on failure. */
async function ip(...args: string[]): Promise<void> {
  const out = await new Deno.Command("ip", { args, stderr: "piped" }).output();
  if (!out.success) throw new Error(`ip ${args.join(" ")}: ${dec.decode(out.stderr)}`);
}

Deno.test("connector bind: a spoofed backend datagram from another network never reaches the flow", async () => {
  // Three namespaces of our own: the connector's host C (with relay and agent on its loopback),
  // the backend B on one link and an attacker X on another, who claims B's address.
  const tag = crypto.randomUUID().slice(0, 6);
  const [c, b, x] = ["c", "b", "x"].map((n) => `ztna-${n}-${tag}`);
  const created: string[] = [];
  try {
    for (const ns of [c, b, x]) {
      await ip("netns", "add", ns);
      created.push(ns);
      await ip("-n", ns, "link", "set", "lo", "up");
    }
    await ip("-n", c, "link", "add", "vb", "type", "veth", "peer", "name", "vc", "netns", b);
    await ip("-n", c, "link", "add", "vx", "type", "veth", "peer", "name", "vc", "netns", x);
    const address = async (ns: string, dev: string, cidr: string) => {
      await ip("-n", ns, "addr", "add", cidr, "dev", dev);
      await ip("-n", ns, "link", "set", dev, "up");
    };
    await address(c, "vb", "10.31.1.1/24");
    await address(c, "vx", "10.31.2.1/24");
    await address(b, "vc", "10.31.1.2/24");
    await address(x, "vc", "10.31.2.2/24");
    await ip("-n", x, "addr", "add", "10.31.1.2/32", "dev", "vc");
    // Reverse-path filtering would drop the spoof on its own; switch it off so the test
    // shows what the bind address alone does.
    for (const key of ["all", "default", "vx"]) {
      await ip("netns", "exec", c, "sysctl", "-qw", `net.ipv4.conf.${key}.rp_filter=0`);
    }
    const scenario = await new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        c,
        Deno.execPath(),
        "run",
        "-A",
        `--config=${join(PROJECT_ROOT, "deno.json")}`,
        join(PROJECT_ROOT, "test", "e2e", "connector_bind_scenario.ts"),
        b,
        x,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const report = dec.decode(scenario.stdout);
    assert.ok(scenario.success, `scenario failed:\n${report}\n${dec.decode(scenario.stderr)}`);
    const result = JSON.parse(report.trim().split("\n").pop()!);
    assert.equal(result.bind, "10.31.1.1");
    assert.equal(result.reason, "on_link");
    assert.equal(result.leaked, 0);
    assert.ok(result.noPortsDelta >= 1, "the spoofed datagram did arrive at the host");
  } finally {
    for (const ns of created) await ip("netns", "del", ns).catch(() => {});
  }
});
