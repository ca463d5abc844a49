import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { metric, scrape } from "../_support/harness.ts";
import { waitFor } from "../_support/wait.ts";
import {
  echoTcp,
  mib,
  patternChunks,
  patternSha256,
  readAll,
  readHashed,
  sampleRss,
  startTcpServer,
  startTcpTunnel,
  withTimeout,
  writeAll,
} from "../_support/tcp_util.ts";

const MiB = 1 << 20;
const decoder = new TextDecoder();

/** HTTP backend: `/big` streams 100 MiB of pattern bytes, anything else says hello. */
function startHttpBackend(): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    if (new URL(request.url).pathname !== "/big") return new Response("hello through the tunnel\n");
    const chunks = patternChunks(100 * MiB);
    return new Response(
      new ReadableStream<Uint8Array>({
        pull(controller) {
          const next = chunks.next();
          if (next.done) controller.close();
          else controller.enqueue(next.value.slice());
        },
      }),
      { headers: { "content-length": String(100 * MiB) } },
    );
  });
}

/**
 * Slow sink: reads only after a 2 s pause, pauses 200 ms every 8 MiB, and answers
 * `<bytes> <sha256>` once the client has half-closed.
 */
async function slowSink(conn: Deno.TcpConn): Promise<void> {
  let nextPause = 8 * MiB;
  await new Promise((r) => setTimeout(r, 2000));
  const { total, sha256 } = await readHashed(conn, (total) => {
    if (total < nextPause) return;
    nextPause += 8 * MiB;
    return new Promise((r) => setTimeout(r, 200));
  });
  await writeAll(conn, new TextEncoder().encode(`${total} ${sha256}\n`));
}

// Hang guard for every transfer of this file, sized for a 2-core machine shared with other
// work (a loaded run moved 100 MiB at about 1.4 MB/s); speed is bench:tcp's business.
const HANG_GUARD_MS = 600_000;

async function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", String(HANG_GUARD_MS / 1000), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

const CONCURRENT = 200;
const PER_FLOW_KIB = 1024;
const PER_FLOW = PER_FLOW_KIB * 1024;

Deno.test("tcp tunnel: curl, 100 MiB both ways with bounded memory, concurrent flows, half-close", async (t) => {
  const http = startHttpBackend();
  const echoServer = startTcpServer(echoTcp);
  const sink = startTcpServer(slowSink);
  const tunnel = await startTcpTunnel({
    backends: { web: http.addr.port, echo: echoServer.port, sink: sink.port },
  });
  const tmp = await Deno.makeTempDir({ prefix: "ztna-tcp-" });
  try {
    await t.step("curl gets a page through the agent", async () => {
      const result = await curl([`http://127.0.0.1:${tunnel.ports.web}/`]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, "hello through the tunnel\n");
    });

    await t.step("curl downloads 100 MiB with a matching SHA-256", async () => {
      const path = join(tmp, "big");
      const started = performance.now();
      const result = await curl(["-o", path, `http://127.0.0.1:${tunnel.ports.web}/big`]);
      const seconds = (performance.now() - started) / 1000;
      assert.equal(result.code, 0, result.stderr);
      assert.equal((await Deno.stat(path)).size, 100 * MiB);
      assert.equal(await sha256File(path), patternSha256(100 * MiB));
      console.log(`tcp download: 100 MiB in ${seconds.toFixed(1)} s, SHA-256 matches`);
      await Deno.remove(path);
    });

    await t.step("100 MiB upload to a slow reader: right checksum, bounded RSS", async () => {
      const rss = sampleRss([tunnel.relay, tunnel.agent], 100);
      await new Promise((r) => setTimeout(r, 300)); // a baseline sample before the upload
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: tunnel.ports.sink });
      const started = performance.now();
      const reply = (async () => {
        for (const chunk of patternChunks(100 * MiB, 2)) await writeAll(conn, chunk);
        await conn.closeWrite(); // half-close: the answer comes after our FIN
        return decoder.decode(await readAll(conn, HANG_GUARD_MS));
      })();
      const answer = await withTimeout(reply, HANG_GUARD_MS, "upload");
      conn.close();
      const seconds = (performance.now() - started) / 1000;
      const figures = await rss.stop();
      assert.equal(answer, `${100 * MiB} ${patternSha256(100 * MiB, 2)}\n`);
      for (const name of ["relay", "agent"]) {
        const { first, peak } = figures[name];
        console.log(
          `tcp upload: ${name} RSS before ${mib(first)}, peak ${mib(peak)} (+${
            mib(peak - first)
          }) during a 100 MiB upload in ${seconds.toFixed(1)} s`,
        );
        // Without backpressure the agent would hold most of the 100 MiB the client writes
        // faster than the backend reads; flow control keeps it to a few windows.
        assert.ok(peak - first < 64 * MiB, `${name} RSS grew by ${mib(peak - first)}`);
      }
    });

    await t.step(
      "half-close: the reply arrives after the client shuts down its write side",
      async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: tunnel.ports.sink });
        const question = new TextEncoder().encode("is anybody there?");
        await writeAll(conn, question);
        await conn.closeWrite();
        const answer = decoder.decode(await readAll(conn, 10_000));
        conn.close();
        const expected = createHash("sha256").update(question).digest("hex");
        assert.equal(answer, `${question.length} ${expected}\n`);
      },
    );

    await t.step(
      `${CONCURRENT} concurrent connections each move ${PER_FLOW_KIB} KiB both ways`,
      async () => {
        const started = performance.now();
        const received = new Array<number>(CONCURRENT).fill(0);
        const connectedAt = new Array<number>(CONCURRENT).fill(0);
        const firstByteAt = new Array<number>(CONCURRENT).fill(0);
        let firstDone: number[] | undefined;
        let firstDoneAt = 0;
        const one = async (i: number) => {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: tunnel.ports.echo });
          connectedAt[i] = performance.now() - started;
          try {
            const sending = (async () => {
              for (const chunk of patternChunks(PER_FLOW, 100 + i)) await writeAll(conn, chunk);
              await conn.closeWrite();
            })();
            const { total, sha256 } = await readHashed(conn, (total) => {
              if (received[i] === 0) firstByteAt[i] = performance.now() - started;
              received[i] = total;
            });
            // Fairness: what every flow had when the first one was done.
            if (firstDone === undefined) {
              firstDone = [...received];
              firstDoneAt = performance.now() - started;
            }
            await sending;
            assert.equal(total, PER_FLOW, `connection ${i} got ${total} bytes`);
            assert.equal(sha256, patternSha256(PER_FLOW, 100 + i), `connection ${i}`);
          } finally {
            conn.close();
          }
        };
        await withTimeout(
          Promise.all(Array.from({ length: CONCURRENT }, (_, i) => one(i))),
          HANG_GUARD_MS,
          `${CONCURRENT} connections`,
        );
        console.log(
          `tcp concurrency: ${CONCURRENT} connections x ${PER_FLOW_KIB} KiB each way in ${
            ((performance.now() - started) / 1000).toFixed(1)
          } s`,
        );
        const shares = firstDone!.map((bytes) => bytes / PER_FLOW).sort((a, b) => a - b);
        const percent = (share: number) => `${(share * 100).toFixed(0)}%`;
        const slowest = firstDone!.indexOf(Math.min(...firstDone!));
        console.log(
          `tcp fairness: when the first connection was done (${firstDoneAt.toFixed(0)} ms) the ` +
            `others had received min ${percent(shares[0])}, median ${
              percent(shares[shares.length >> 1])
            } of their bytes; the slowest connected at ${
              connectedAt[slowest].toFixed(0)
            } ms, first byte at ${firstByteAt[slowest].toFixed(0)} ms; last connect at ${
              Math.max(...connectedAt).toFixed(0)
            } ms`,
        );
        // Served one after another, most flows would have nothing yet; round robin keeps
        // them close. Judged at the tenth percentile, not the minimum: with the relay's CPU
        // saturated by 200 flows each way, its receive buffer overflows (counted in
        // udp_receive_drops_total), and a flow whose first packets were among the dropped
        // starts seconds late after loss recovery (seen: first byte at 3-7 s, min share 0-53%
        // over runs), which is loss, not the scheduler.
        const p10 = shares[Math.floor(shares.length / 10)];
        assert.ok(
          p10 >= 0.25,
          `a tenth of the flows had ${percent(p10)} or less when the first ended`,
        );
      },
    );

    // quiche grants new streams (MAX_STREAMS) only as finished ones are collected: more
    // sequential flows than initial_max_streams_bidi (1024) prove the credit comes back.
    await t.step("1,500 short sequential connections all work", async () => {
      const started = performance.now();
      const ping = new TextEncoder().encode("ping");
      const one = async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: tunnel.ports.echo });
        try {
          await writeAll(conn, ping);
          await conn.closeWrite();
          const buffer = new Uint8Array(16);
          let total = 0;
          for (;;) {
            const n = await conn.read(buffer.subarray(total));
            if (n === null) break;
            total += n;
          }
          assert.equal(decoder.decode(buffer.subarray(0, total)), "ping");
        } finally {
          conn.close();
        }
      };
      await withTimeout(
        (async () => {
          for (let i = 0; i < 1500; i++) await one();
        })(),
        HANG_GUARD_MS,
        "1,500 sequential connections",
      );
      console.log(
        `tcp sequential: 1500 connections in ${
          ((performance.now() - started) / 1000).toFixed(1)
        } s`,
      );
    });

    await t.step("metrics count the tcp flows and every flow ends", async () => {
      // The flows rode one end-to-end session; the relay saw only its channel.
      const relay = await scrape(String(tunnel.relay.ready.metrics));
      assert.equal(metric(relay, "ztna_relay_channels_active"), 1);
      assert.equal(metric(relay, 'ztna_relay_flows_opened_total{protocol="tcp"}'), 0);
      const agent = await waitFor("tcp flows to end at the agent", async () => {
        const samples = await scrape(String(tunnel.agent.ready.metrics));
        return metric(samples, 'ztna_agent_flows_active{protocol="tcp"}') === 0 && samples;
      });
      // Every one opened and ended (the 1,500 sequential ones included).
      assert.ok(
        metric(agent, 'ztna_agent_flows_opened_total{protocol="tcp"}') >= CONCURRENT + 1500,
      );
      const connector = await waitFor("tcp flows to end at the connector", async () => {
        const samples = await scrape(String(tunnel.connector.ready.metrics));
        return metric(samples, 'ztna_connector_flows_active{protocol="tcp"}') === 0 && samples;
      });
      assert.equal(metric(connector, 'ztna_connector_circuit_state{service="echo"}'), 0);
    });
  } finally {
    await tunnel.stop();
    await Promise.allSettled([http.shutdown(), echoServer.close(), sink.close()]);
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
});
