/**
 * The relay's `/status` page in a real headless Chromium (Debian `chromium`, installed by
 * `deno task test:setup`), and `/status.json` against `/metrics`, with a running relay,
 * connector and agents. One agent's certificate name is an HTML fragment: the page must show
 * it as text.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { requireTools } from "../../tools/host_tools.ts";
import { metric, portOf, scrape, udpClient } from "../_support/harness.ts";
import { waitFor } from "../_support/wait.ts";
import { startEchoTrio, writeAll } from "../_support/tcp_util.ts";

/** A certificate name an attacker could choose (its CA lets users pick their CN). */
const HOSTILE = `<img src=x onerror="document.title='owned'">evil`;

/**
 * A client certificate named {@linkcode HOSTILE}, from a second CA made with openssl (the dev
 * CA refuses such names, as it should); returns its files and the CA's PEM.
 */
async function hostileClient(dir: string): Promise<{ cert: string; key: string; caPem: string }> {
  const openssl = async (...args: string[]) => {
    const out = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    })
      .output();
    assert.ok(out.success, `openssl ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
  };
  await openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key");
  await openssl(
    "req",
    "-x509",
    "-new",
    "-key",
    "ca.key",
    "-subj",
    "/CN=another CA",
    "-days",
    "2",
    "-out",
    "ca.pem",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  );
  await openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf.ec");
  await openssl("pkcs8", "-topk8", "-nocrypt", "-in", "leaf.ec", "-out", "leaf.key");
  await openssl("req", "-new", "-key", "leaf.key", "-subj", `/CN=${HOSTILE}`, "-out", "leaf.csr");
  await Deno.writeTextFile(
    join(dir, "leaf.ext"),
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
  );
  await openssl(
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "leaf.ext",
    "-out",
    "leaf.pem",
  );
  return {
    cert: join(dir, "leaf.pem"),
    key: join(dir, "leaf.key"),
    caPem: await Deno.readTextFile(join(dir, "ca.pem")),
  };
}

/** Runs headless Chromium on `url` with `flags`; resolves with its stdout (bounded). */
async function chromium(url: string, flags: string[]): Promise<string> {
  const profile = await Deno.makeTempDir({ prefix: "ztna-chromium-" });
  try {
    const output = await new Deno.Command("chromium", {
      args: [
        "--headless",
        // Root in a container: Chromium's own sandbox needs user namespaces it may not get.
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        `--user-data-dir=${profile}`,
        ...flags,
        url,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    assert.ok(output.success, `chromium failed: ${new TextDecoder().decode(output.stderr)}`);
    return new TextDecoder().decode(output.stdout);
  } finally {
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

Deno.test("status: /status in headless Chromium shows the service, its connector and the agents; /status.json matches /metrics", async () => {
  requireTools(["chromium", "openssl"]);
  const trio = await startEchoTrio({
    relay: { id: "relay-<main>" },
  });
  const shots = await Deno.makeTempDir({ prefix: "ztna-status-" });
  let tcpConn: Deno.TcpConn | null = null;
  try {
    // Traffic that stays open while the page is looked at: one UDP flow, one TCP flow.
    const client = udpClient();
    for (const size of [100, 200]) {
      await client.send(new Uint8Array(size), portOf(trio.listen[0]));
      assert.equal((await client.receive(5000))?.length, size);
    }
    client.close();
    tcpConn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(trio.listen[1]) });
    await writeAll(tcpConn, new Uint8Array(1000).fill(7));
    const echoed = new Uint8Array(1000);
    for (let got = 0; got < 1000;) got += (await tcpConn.read(echoed.subarray(got))) ?? 1000;
    // An agent whose certificate name is markup, from a CA the relay learns by a reload; the
    // policy allows it nothing, but it is connected and listed.
    const hostile = await hostileClient(shots);
    const caPath = trio.pki.tls("relay").ca;
    await Deno.writeTextFile(caPath, (await Deno.readTextFile(caPath)) + hostile.caPem);
    trio.relay.signal("SIGHUP");
    await trio.relay.waitForLog((l) => l.msg === "reloaded");
    const evil = await trio.startAgent(HOSTILE, {
      cert: hostile.cert,
      key: hostile.key,
      ca: caPath,
    });
    await evil.waitForLog((l) => l.msg === "relay link up", 20_000);

    const ops = String(trio.relay.ready.metrics);
    // Both flows ride agent-1's end-to-end session: one channel, whose bytes are encrypted.
    const status = await waitFor("status with the channel and both agents", async () => {
      const json = await (await fetch(`http://${ops}/status.json`)).json();
      return json.channels_active === 1 && json.agents.length === 2 &&
          json.channels[0].bytes_to_agent > 1300
        ? json
        : undefined;
    });

    // /status.json against /metrics: the same figures.
    const samples = await scrape(ops);
    assert.equal(
      status.connections.connector,
      metric(samples, 'ztna_relay_connections_active{role="connector"}'),
    );
    assert.equal(
      status.connections.agent,
      metric(samples, 'ztna_relay_connections_active{role="agent"}'),
    );
    assert.equal(status.channels_active, metric(samples, "ztna_relay_channels_active"));
    assert.equal(
      status.channels[0].bytes_to_connector,
      metric(samples, 'ztna_relay_channel_bytes_total{direction="to_connector"}'),
    );
    assert.equal(status.services_registered, metric(samples, "ztna_relay_services_registered"));
    for (const service of status.services) {
      const key = (name: string, direction: string) =>
        `ztna_relay_${name}_total{service="${service.name}",direction="${direction}"}`;
      assert.equal(service.bytes_to_service, metric(samples, key("service_bytes", "to_connector")));
      assert.equal(service.bytes_to_agent, metric(samples, key("service_bytes", "to_agent")));
      assert.equal(
        service.packets_to_service,
        metric(samples, key("service_packets", "to_connector")),
      );
      assert.equal(service.packets_to_agent, metric(samples, key("service_packets", "to_agent")));
    }
    const echoStatus = status.services.find((s: { name: string }) => s.name === "echo");
    assert.deepEqual(echoStatus.connectors.map((c: { identity: string }) => c.identity), [
      "connector-1",
    ]);
    const [channel] = status.channels;
    assert.equal(channel.agent, "agent-1");
    assert.equal(channel.connector, "connector-1");
    assert.deepEqual(channel.services, ["echo", "tcpecho"]);
    const agent1 = status.agents.find((a: { identity: string }) => a.identity === "agent-1");
    assert.equal(agent1.channels, 1);
    assert.equal(agent1.peer, channel.agent_peer);
    assert.equal(status.draining, false);
    assert.equal(status.relay_id, "relay-<main>");
    // No secrets: no key material, no file paths of the TLS files.
    const text = JSON.stringify(status);
    assert.doesNotMatch(text, /PRIVATE KEY|BEGIN |\.key"|token/i);
    assert.ok(!text.includes(trio.pki.dir), "no certificate paths");

    // The page itself: no script, refreshes itself, says so to the browser.
    const page = await fetch(`http://${ops}/status`);
    assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
    assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'none'/);
    const html = await page.text();
    assert.doesNotMatch(html, /<script/i);
    assert.match(html, /<meta http-equiv="refresh" content="\d+">/);

    // A real browser: the DOM after load, and a screenshot.
    const dom = await chromium(`http://${ops}/status`, ["--dump-dom"]);
    assert.match(dom, /<h2>Service echo<\/h2>/);
    assert.match(dom, /<h2>Service tcpecho<\/h2>/);
    assert.match(dom, /<table class="connectors">.*<td>connector-1<\/td>/s);
    assert.match(dom, /<table class="agents">.*<td>agent-1<\/td>/s);
    assert.match(dom, /<table class="channels">.*<td>agent-1<\/td>.*<td>connector-1<\/td>/s);
    // The hostile name is text in a cell: escaped in the DOM, no element made of it, and
    // its handler never ran (it would have renamed the document).
    assert.ok(dom.includes("<td>&lt;img src=x onerror=\"document.title='owned'\"&gt;evil</td>"));
    assert.doesNotMatch(dom, /<img/);
    assert.match(dom, /<title>ztna-edge relay relay-&lt;main&gt;<\/title>/);
    const shot = join(shots, "status.png");
    await chromium(`http://${ops}/status`, [`--screenshot=${shot}`, "--window-size=1280,1000"]);
    const png = await Deno.readFile(shot);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.ok(png.length > 10_000, `a real rendering, not an empty image (${png.length} B)`);
    const keep = Deno.env.get("ZTNA_STATUS_SCREENSHOT");
    if (keep) await Deno.copyFile(shot, keep);
    console.log(
      `status: ${status.services.length} services, ${status.agents.length} agents, ` +
        `${status.channels_active} channel; DOM ${dom.length} B; ` +
        `screenshot ${png.length} B`,
    );
  } finally {
    tcpConn?.close();
    await trio.stop();
    await Deno.remove(shots, { recursive: true }).catch(() => {});
  }
});
