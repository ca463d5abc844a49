/**
 * Findings 4 and 5 of issue 12 against a real relay: half-open handshakes and sessions that
 * never say hello, held from one address, cannot take the slots legitimate agents need. The
 * pre-auth budget caps them per address and in total, a metric shows them, and their
 * deadline closes them.
 */
import assert from "node:assert/strict";
import { tokenHashText } from "../../shared/config/tokens.ts";
import { closePeers, dialPeer, startAttacker } from "../_support/attack_client.ts";
import {
  createPki,
  metric,
  portOf,
  scrape,
  startComponent,
  startEchoService,
  udpClient,
} from "../_support/harness.ts";
import { startTrio } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";

const enc = new TextEncoder();
const PER_IP = 40;
const DEADLINE_MS = 12_000;
const limits = {
  preauth_timeout_ms: DEADLINE_MS,
  preauth_connections_per_ip: PER_IP,
  // Enough for the attackers' share; the per-address cap is what they hit.
  preauth_connections: 1000,
};

const preauth = async (address: string, stage: "handshake" | "hello") =>
  metric(await scrape(address), `ztna_relay_preauth_connections{stage="${stage}"}`);

/** Resolves once `dial` has produced a session; fails if that takes longer than `ms`. */
async function connectsWithin<T>(what: string, ms: number, dial: () => Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      dial(),
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error(`${what} did not connect in ${ms} ms`)), ms)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("attack 4+5: half-open handshakes and hello-less sessions from one address; an agent still connects", async () => {
  const echo = await startEchoService();
  await using trio = await startTrio({
    backends: { echo: `udp://127.0.0.1:${echo.port}` },
    forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    agents: ["agent-1", "agent-2"],
    relay: { limits },
    processes: [echo.proc],
  });
  const relayPort = portOf(trio.relayAddress);
  const relayMetrics = String(trio.relay.ready.metrics);
  const client = udpClient();
  // Finding 4: half-open handshakes from one address. Finding 5: a certificate holder's TLS
  // sessions that never say hello, from another, dialled at once, well inside the deadline.
  // Both start together, so every attacker connection is measured well inside its deadline
  // even on a loaded machine (each attacker process takes a while to start).
  const [halfOpen, silent] = await Promise.all([
    startAttacker({
      mode: "half-open",
      relayPort,
      bindHost: "127.0.0.2",
      count: 200,
      tls: trio.pki.tls("agent-2"),
    }),
    startAttacker({
      mode: "silent",
      relayPort,
      bindHost: "127.0.0.3",
      count: 2 * PER_IP,
      tls: trio.pki.tls("agent-2"),
    }),
  ]);
  try {
    const held = Number(silent.ready.established);
    await waitFor(
      "the half-open handshakes capped",
      async () =>
        metric(
          await scrape(relayMetrics),
          'ztna_relay_packets_dropped_total{reason="preauth_limit"}',
        ) >
          0,
    );
    const handshaking = await preauth(relayMetrics, "handshake");
    const waiting = await preauth(relayMetrics, "hello");
    console.log(
      `under attack: ${halfOpen.ready.held} half-open handshakes attempted, ` +
        `${held} of ${
          2 * PER_IP
        } silent sessions established; relay pre-auth gauge handshake ${handshaking}, hello ${waiting}`,
    );
    assert.ok(handshaking >= 1 && handshaking <= PER_IP, `handshake gauge ${handshaking}`);
    assert.ok(waiting <= PER_IP, `hello gauge ${waiting}`);
    assert.equal(held, PER_IP, "one address holds at most its cap of sessions");

    // Meanwhile a legitimate agent connects within 2 s, and the running one keeps echoing.
    const legit = await connectsWithin(
      "agent-1",
      2000,
      () => dialPeer({ relayPort, tls: trio.pki.tls("agent-1") }),
    );
    assert.ok(legit.messages.some((m) => m.type === "hello"));
    await client.send(enc.encode("during"), portOf(trio.listen[0]));
    assert.equal(new TextDecoder().decode((await client.receive(3000)) ?? undefined), "during");

    // The deadline closes every attacker's connection; the gauge falls back.
    await waitFor(
      "the pre-auth connections closed at their deadline",
      async () =>
        (await preauth(relayMetrics, "handshake")) + (await preauth(relayMetrics, "hello")) === 0,
      DEADLINE_MS + 10_000,
    );
    await waitFor(
      "the silent sessions closed",
      () => silent.logs.filter((l) => l.msg === "closed").length === held,
      5000,
    );
    const samples = await scrape(relayMetrics);
    assert.ok(metric(samples, 'ztna_relay_preauth_closes_total{reason="timeout"}') >= PER_IP);
    assert.equal(legit.conn.closed, false, "an authenticated session has no deadline");
    assert.equal(metric(samples, "ztna_relay_handler_errors_total"), 0);
  } finally {
    await halfOpen.stop();
    await silent.stop();
    client.close();
    await closePeers();
  }
});

Deno.test("attack 5 with token auth: anybody's TLS sessions are capped and closed; a token holder connects", async () => {
  const pki = await createPki([]);
  const token = "ztna-preauth-test-token-0123456789";
  const relay = await startComponent("relay", {
    listen: "127.0.0.1:0",
    metrics: "127.0.0.1:0",
    tls: pki.tls("relay"),
    auth: "token",
    tokens: { "agent-1": [tokenHashText(token)] },
    limits,
  });
  const relayPort = portOf(relay.ready.quic);
  const relayMetrics = String(relay.ready.metrics);
  const tls = { ca: pki.tls("relay").ca };
  const silent = await startAttacker({
    mode: "silent",
    relayPort,
    bindHost: "127.0.0.2",
    count: PER_IP + 10,
    tls,
  });
  try {
    assert.equal(silent.ready.established, PER_IP);
    assert.equal(await preauth(relayMetrics, "hello"), PER_IP);
    const legit = await connectsWithin(
      "the token holder",
      2000,
      () => dialPeer({ relayPort, tls, token }),
    );
    assert.ok(legit.messages.some((m) => m.type === "hello" && m.identity === "agent-1"));
    const closed = () => silent.logs.filter((l) => l.msg === "closed");
    await waitFor(
      "the silent sessions closed at their deadline",
      () => closed().length === PER_IP,
      DEADLINE_MS + 10_000,
    );
    assert.ok(closed().every((l) => l.reason === "authentication_timeout"));
    legit.conn.close(0, "done");
  } finally {
    await silent.stop();
    await closePeers();
    await relay.stop();
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
