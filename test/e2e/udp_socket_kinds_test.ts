/**
 * The UDP socket layer as the components run it: batched under the derived sandbox, the
 * portable fallback carrying UDP and TCP just the same, the fallback chosen when the sandbox
 * does not grant libc, and `batched` demanded where it cannot run refused as a config error.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createPki, metric, scrape, spawnLogged, udpClient } from "../_support/harness.ts";
import { readAll, startEchoTrio, withTimeout, writeAll } from "../_support/tcp_util.ts";
import { PROJECT_ROOT } from "../../tools/permissions.ts";

async function echoThrough(port: number, payload: Uint8Array): Promise<Uint8Array | null> {
  const client = udpClient();
  try {
    // The first datagram may open the flow; retry a few times (bounded).
    for (let i = 0; i < 5; i++) {
      await client.send(payload, port);
      const reply = await client.receive(1000);
      if (reply !== null) return reply;
    }
    return null;
  } finally {
    client.close();
  }
}

for (const kind of ["batched", "portable"] as const) {
  Deno.test(`udp sockets (${kind}): UDP and TCP flows through all three components`, async () => {
    const trio = await startEchoTrio({
      relay: { udp: { socket: kind } },
      connector: { udp: { socket: kind } },
      agent: { udp: { socket: kind } },
    });
    try {
      for (const proc of [trio.relay, trio.connector, trio.agent]) {
        const line = proc.logs.find((l) => l.msg === "udp sockets");
        assert.equal(line?.kind, kind, JSON.stringify(line));
      }
      // 1 B to 8 KiB (fragmented on the way) and back.
      for (const size of [1, 1200, 8192]) {
        const payload = new Uint8Array(size).map((_, i) => i & 0xff);
        const reply = await echoThrough(Number(trio.listen[0].split(":").pop()), payload);
        assert.deepEqual(reply, payload, `${size} B echo`);
      }
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: Number(trio.listen[1].split(":").pop()),
      });
      await writeAll(conn, new TextEncoder().encode("through the tunnel"));
      await conn.closeWrite();
      const answer = await withTimeout(readAll(conn, 5000), 6000, "the TCP answer");
      conn.close();
      assert.equal(new TextDecoder().decode(answer), "through the tunnel");
      for (const proc of [trio.relay, trio.connector, trio.agent]) {
        const component = proc === trio.relay
          ? "relay"
          : proc === trio.connector
          ? "connector"
          : "agent";
        const samples = await scrape(String(proc.ready.metrics));
        const p = `ztna_${component}_`;
        assert.equal(metric(samples, `${p}udp_socket_info{kind="${kind}"}`), 1, component);
        assert.ok(metric(samples, `${p}udp_datagrams_total{direction="received"}`) > 0);
        assert.ok(metric(samples, `${p}udp_syscalls_total{direction="sent"}`) > 0);
        const buffer = metric(samples, `${p}udp_socket_buffer_bytes{direction="receive"}`);
        if (kind === "batched") {
          // Asked for 4 MiB: granted up to net.core.rmem_max (4 MiB here), or forced as root;
          // the kernel reports twice what it granted.
          assert.ok(buffer > 2 * 212_992, `${component} receive buffer ${buffer}`);
        } else assert.equal(buffer, 0);
      }
    } finally {
      await trio.stop();
    }
  });
}

Deno.test("udp sockets: without libc in --allow-ffi, auto falls back; batched is refused", async (t) => {
  const pki = await createPki([]);
  const config = (socket: string) =>
    JSON.stringify({
      listen: "127.0.0.1:0",
      metrics: "off",
      tls: pki.tls("relay"),
      udp: { socket },
    });
  // The quiche addon's folder only: what a sandbox without the batched socket grants.
  const addon = join(PROJECT_ROOT, "node_modules");
  const flags = [
    "run",
    "--no-prompt",
    `--config=${join(PROJECT_ROOT, "deno.json")}`,
    "--allow-read",
    "--allow-env",
    "--allow-net",
    `--allow-ffi=${addon}`,
    join(PROJECT_ROOT, "relay", "main.ts"),
  ];
  try {
    await t.step("auto: portable, with the reason in the log line", async () => {
      const path = join(pki.dir, "auto.json");
      await Deno.writeTextFile(path, config("auto"));
      const relay = await spawnLogged("relay", [...flags, "--config", path]);
      try {
        const line = relay.logs.find((l) => l.msg === "udp sockets");
        assert.equal(line?.kind, "portable");
        assert.match(String(line?.reason), /--allow-ffi does not include .*libc/);
      } finally {
        await relay.stop("SIGTERM");
      }
    });
    await t.step("batched: exit 2 naming udp.socket", async () => {
      const path = join(pki.dir, "batched.json");
      await Deno.writeTextFile(path, config("batched"));
      const out = await new Deno.Command(Deno.execPath(), {
        args: [...flags, "--config", path],
        cwd: PROJECT_ROOT,
        stdout: "piped",
        stderr: "piped",
        stdin: "null",
        signal: AbortSignal.timeout(30_000),
      }).output();
      assert.equal(out.code, 2);
      assert.match(new TextDecoder().decode(out.stderr), /udp\.socket.*batched/);
    });
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
