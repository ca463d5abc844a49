import assert from "node:assert/strict";
import { startTunnel } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";
import { freePort } from "../_support/ports.ts";

async function dig(port: number, name: string): Promise<string> {
  const out = await new Deno.Command("dig", {
    args: ["@127.0.0.1", "-p", String(port), name, "A", "+short", "+tries=1", "+time=2"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test("udp tunnel: a real DNS server (dnsmasq) answers dig through the agent", async () => {
  const dnsPort = freePort("udp");
  const dnsmasq = new Deno.Command("dnsmasq", {
    args: [
      "--keep-in-foreground",
      "--no-resolv",
      "--no-hosts",
      "--bind-interfaces",
      "--listen-address=127.0.0.1",
      `--port=${dnsPort}`,
      "--address=/app.internal/10.20.30.40",
      "--address=/db.internal/10.20.30.41",
      "--user=root",
      "--pid-file=",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    await waitFor(
      "dnsmasq answering",
      async () => (await dig(dnsPort, "app.internal")) === "10.20.30.40",
    );
    await using tunnel = await startTunnel({ service: "dns", backendPort: dnsPort });
    assert.equal(await dig(tunnel.agentPort, "app.internal"), "10.20.30.40");
    assert.equal(await dig(tunnel.agentPort, "db.internal"), "10.20.30.41");
    // Each dig runs from a new source port: a new flow per query, all answered.
    for (let i = 0; i < 5; i++) {
      assert.equal(await dig(tunnel.agentPort, "app.internal"), "10.20.30.40");
    }
  } finally {
    dnsmasq.kill("SIGTERM");
    await dnsmasq.status;
    await dnsmasq.stderr.cancel();
  }
});
