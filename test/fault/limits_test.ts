import assert from "node:assert/strict";
import { createControlChannel } from "../../shared/control_channel.ts";
import { encodeControl, PROTOCOL_VERSION } from "../../shared/protocol/control.ts";
import { type CloseInfo, connectQuic, type QuicConnection } from "../../shared/quic/mod.ts";
import { readTlsFiles } from "../../shared/tls_files.ts";
import { createPki, metric, portOf, scrape, startComponent } from "../_support/harness.ts";
import { relayConfig } from "../_support/trio.ts";
import { waitFor } from "../_support/wait.ts";

interface Peer {
  conn: QuicConnection;
  closed: Promise<CloseInfo>;
  /** Resolves with the relay's `hello` answer. */
  hello: Promise<unknown>;
}

/** A QUIC client from `bindHost` that says `hello` as an agent once established. */
function dial(
  relayPort: number,
  bindHost: string,
  tls: ReturnType<typeof readTlsFiles>,
  sayHello = true,
): Peer {
  const conn = connectQuic({
    server: { host: "127.0.0.1", port: relayPort },
    serverName: "localhost",
    tls,
    bindHost,
  });
  const hello = Promise.withResolvers<unknown>();
  const closed = Promise.withResolvers<CloseInfo>();
  const channel = createControlChannel(conn, {
    onMessage: (message) => message.type === "hello" && hello.resolve(message),
    onProtocolError: () => {},
  });
  conn.setHandlers({
    onEstablished: () => {
      if (sayHello) channel.send({ type: "hello", v: PROTOCOL_VERSION, role: "agent" });
    },
    onStreamReadable: (id) => id === 0 && channel.readable(),
    onStreamWritable: (id) => id === 0 && channel.writable(),
    onClosed: closed.resolve,
  });
  hello.promise.catch(() => {});
  return { conn, closed: closed.promise, hello: hello.promise };
}

const within = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([promise, new Promise<null>((r) => setTimeout(() => r(null), ms))]);

Deno.test("limits: offenders are shed and counted, the relay and other peers carry on", async (t) => {
  const pki = await createPki(["agent-1"]);
  const relay = await startComponent("relay", {
    ...relayConfig(pki, { echo: { connectors: [], agents: ["agent-1"] } }),
    // A CONNECTION_CLOSE lost under load is then resolved by the idle timeout within seconds.
    idle_timeout_ms: 3000,
    limits: {
      handshakes_per_second_per_ip: 5,
      connections_per_identity: 2,
      control_frames_per_second: 10,
    },
  });
  const relayPort = portOf(relay.ready.quic);
  const metrics = String(relay.ready.metrics);
  const tls = readTlsFiles(pki.tls("agent-1"));
  const peers: Peer[] = [];
  try {
    await t.step(
      "an Initial flood from 127.0.0.2 is throttled; 127.0.0.3 still connects",
      async () => {
        // Real QUIC clients: each completes the Retry round trip, so the flood spends the
        // flooding address's own handshake budget, as a real attacker's would.
        const flood = Array.from({ length: 60 }, () => dial(relayPort, "127.0.0.2", tls, false));
        peers.push(...flood);
        await waitFor("flood throttled", async () =>
          metric(
            await scrape(metrics),
            'ztna_relay_packets_dropped_total{reason="rate_limited"}',
          ) >=
            40);
        const good = dial(relayPort, "127.0.0.3", tls);
        peers.push(good);
        assert.ok(await within(good.hello, 5000), "the well-behaved client is served");
        const established = flood.filter((p) => p.conn.established).length;
        assert.ok(established <= 10, `at most the burst got through: ${established}`);
        for (const p of [...flood, good]) p.conn.close(0, "done");
        await waitFor("closed", () => good.conn.closed);
        // The next step counts connections per identity: start from none held at the relay.
        await waitFor(
          "relay released the sessions",
          async () =>
            metric(await scrape(metrics), 'ztna_relay_connections_active{role="agent"}') === 0,
        );
      },
    );

    await t.step("a third connection of one identity is closed with LIMIT", async () => {
      const first = dial(relayPort, "127.0.0.4", tls);
      const second = dial(relayPort, "127.0.0.4", tls);
      peers.push(first, second);
      assert.ok(await within(first.hello, 5000));
      assert.ok(await within(second.hello, 5000));
      const third = dial(relayPort, "127.0.0.4", tls);
      peers.push(third);
      const info = await within(third.closed, 5000);
      assert.deepEqual(info?.peer && { code: info.peer.code, reason: info.peer.reason }, {
        code: 3,
        reason: "connections_per_identity",
      });
      const samples = await scrape(metrics);
      assert.ok(
        metric(samples, 'ztna_relay_limit_hits_total{limit="connections_per_identity"}') >= 1,
      );
      for (const p of [first, second]) p.conn.close(0, "done");
      await waitFor("slots freed", () => first.conn.closed && second.conn.closed);
    });

    await t.step("a control-frame flood closes only that connection", async () => {
      const noisy = dial(relayPort, "127.0.0.5", tls);
      peers.push(noisy);
      assert.ok(await within(noisy.hello, 5000));
      const burst: number[] = [];
      for (let seq = 0; seq < 100; seq++) burst.push(...encodeControl({ type: "ping", seq }));
      noisy.conn.streamWrite(0, new Uint8Array(burst));
      const info = await within(noisy.closed, 5000);
      assert.equal(info?.peer?.reason, "control_frames_per_second");
      await waitFor("counted", async () =>
        metric(
          await scrape(metrics),
          'ztna_relay_limit_hits_total{limit="control_frames_per_second"}',
        ) === 1);
      const ready = await fetch(`http://${metrics}/readyz`);
      assert.equal(ready.status, 200, "the relay itself is fine");
      await ready.body?.cancel();
      const after = dial(relayPort, "127.0.0.6", tls);
      peers.push(after);
      assert.ok(await within(after.hello, 5000), "and still serves new peers");
    });
  } finally {
    for (const p of peers) p.conn.close(0, "done");
    await relay.stop();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
