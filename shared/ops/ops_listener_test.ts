import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import { Gauge, Registry } from "prom-client";
import { type HealthReport, type OpsListenerOptions, startOpsListener } from "./ops_listener.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: string;
}

function staticRegistry(): Registry {
  const registry = new Registry();
  new Gauge({ name: "test_up", help: "A fixed test gauge.", registers: [registry] }).set(1);
  return registry;
}

/** Starts a listener on an ephemeral loopback port; the test closes it. */
function listen(overrides: Partial<OpsListenerOptions> = {}) {
  const state: HealthReport = { ready: true, draining: false, detail: { role: "relay" } };
  const rejects: string[] = [];
  const warnings: Record<string, unknown>[] = [];
  const ops = startOpsListener({
    hostname: "127.0.0.1",
    port: 0,
    registry: staticRegistry(),
    health: () => state,
    logger: { warn: (msg, fields) => warnings.push({ msg, ...fields }) },
    onBadRequest: (reason) => rejects.push(reason),
    ...overrides,
  });
  return { ops, state, rejects, warnings };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.length;) offset += await conn.write(bytes.subarray(offset));
}

/** Reads until EOF; fails (and closes) if EOF does not come within `timeoutMs`. */
async function readToEnd(conn: Deno.Conn, timeoutMs = 3000): Promise<Uint8Array> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  const chunks: Uint8Array[] = [];
  try {
    const buffer = new Uint8Array(16 * 1024);
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
      chunks.push(buffer.slice(0, n));
    }
  } catch (error) {
    if (timedOut) throw new Error(`no EOF within ${timeoutMs} ms`);
    throw error;
  } finally {
    clearTimeout(timer);
  }
  const bytes = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

function parseResponse(bytes: Uint8Array): RawResponse {
  const text = decoder.decode(bytes);
  const split = text.indexOf("\r\n\r\n");
  assert(split > 0, `no response head in ${JSON.stringify(text.slice(0, 200))}`);
  const [statusLine, ...lines] = text.slice(0, split).split("\r\n");
  const match = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine);
  assert(match, `bad status line ${statusLine}`);
  const headers = new Map(lines.map((line) => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()] as [string, string];
  }));
  return { status: Number(match[1]), headers, body: text.slice(split + 4) };
}

/** Sends raw bytes on a fresh connection and returns the parsed response. */
async function exchange(port: number, request: string | Uint8Array): Promise<RawResponse> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, typeof request === "string" ? encoder.encode(request) : request);
    return parseResponse(await readToEnd(conn));
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the read timeout.
    }
  }
}

const get = (port: number, path: string, method = "GET") =>
  exchange(port, `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);

function assertFraming(response: RawResponse, bodyLength = response.body.length): void {
  assert.equal(response.headers.get("connection"), "close");
  assert.equal(Number(response.headers.get("content-length")), bodyLength);
}

Deno.test("startOpsListener() serves every route with GET", async () => {
  const { ops } = listen();
  const { port } = ops.addr;
  try {
    assert.equal(ops.addr.hostname, "127.0.0.1");
    assert(port > 0);
    for (const path of ["/healthz", "/livez"]) {
      const response = await get(port, path);
      assert.equal(response.status, 200);
      assert.equal(response.body, "ok");
      assertFraming(response);
    }
    const ready = await get(port, "/readyz");
    assert.deepEqual([ready.status, ready.body], [200, "ready"]);
    assertFraming(ready);

    const metrics = await get(port, "/metrics");
    assert.equal(metrics.status, 200);
    assert.equal(metrics.headers.get("content-type"), new Registry().contentType);
    assert.match(metrics.body, /^test_up 1$/m);
    assertFraming(metrics, encoder.encode(metrics.body).length);

    const health = await get(port, "/health");
    assert.equal(health.status, 200);
    assert.match(health.headers.get("content-type") ?? "", /^application\/json/);
    const document = JSON.parse(health.body);
    assert.deepEqual(Object.keys(document), [
      "status",
      "ready",
      "draining",
      "uptime_seconds",
      "role",
    ]);
    assert.equal(document.status, "ok");
    assert.equal(document.role, "relay");
    assert(document.uptime_seconds > 0);
    assertFraming(health);

    // Query strings do not take part in routing.
    assert.equal((await get(port, "/readyz?verbose=1")).status, 200);
    // HTTP/1.0 clients (some probes) are served too.
    assert.equal((await exchange(port, "GET /livez HTTP/1.0\r\n\r\n")).status, 200);
  } finally {
    await ops.close();
  }
});

Deno.test("startOpsListener() answers HEAD with headers only", async () => {
  const { ops } = listen();
  const { port } = ops.addr;
  try {
    for (const path of ["/healthz", "/livez", "/readyz", "/metrics", "/health"]) {
      const [head, full] = [await get(port, path, "HEAD"), await get(port, path)];
      assert.equal(head.status, 200, path);
      assert.equal(head.body, "", path);
      assert.equal(head.headers.get("connection"), "close");
      // /health carries the uptime, whose digits may differ between the two requests.
      if (path !== "/health") {
        assert.equal(head.headers.get("content-length"), full.headers.get("content-length"), path);
      } else {
        assert(Number(head.headers.get("content-length")) > 0);
      }
    }
  } finally {
    await ops.close();
  }
});

Deno.test("startOpsListener() follows readiness and draining on every probe", async () => {
  const { ops, state } = listen();
  const { port } = ops.addr;
  try {
    state.ready = false;
    let response = await get(port, "/readyz");
    assert.deepEqual([response.status, response.body], [503, "not ready"]);
    response = await get(port, "/health");
    assert.equal(response.status, 503);
    assert.equal(JSON.parse(response.body).status, "not_ready");

    state.ready = true;
    assert.equal((await get(port, "/readyz")).status, 200);

    state.draining = true;
    response = await get(port, "/readyz");
    assert.deepEqual([response.status, response.body], [503, "draining"]);
    response = await get(port, "/health");
    assert.equal(response.status, 503);
    assert.deepEqual(
      (({ status, ready, draining }) => ({ status, ready, draining }))(JSON.parse(response.body)),
      { status: "draining", ready: true, draining: true },
    );
    // Liveness does not depend on readiness.
    assert.equal((await get(port, "/healthz")).status, 200);
  } finally {
    await ops.close();
  }
});

Deno.test("startOpsListener() reports a failing health function as not ready", async () => {
  const { ops, warnings } = listen({
    health: () => {
      throw new Error("boom");
    },
  });
  try {
    assert.equal((await get(ops.addr.port, "/readyz")).status, 503);
    const response = await get(ops.addr.port, "/health");
    assert.equal(response.status, 503);
    assert.equal(JSON.parse(response.body).error, "health report failed");
    assert.equal(warnings[0].msg, "health report failed");
  } finally {
    await ops.close();
  }
});

Deno.test("startOpsListener() answers 404 for unknown paths and 405 for other methods", async () => {
  const { ops, rejects } = listen();
  const { port } = ops.addr;
  try {
    const missing = await get(port, "/metrics/");
    assert.equal(missing.status, 404);
    assertFraming(missing);
    assert.equal((await get(port, "/nope", "POST")).status, 404);
    const post = await exchange(
      port,
      `POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello`,
    );
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    assertFraming(post);
    assert.equal((await get(port, "/readyz", "DELETE")).status, 405);
    // A routing miss is not a bad request.
    assert.deepEqual(rejects, []);
  } finally {
    await ops.close();
  }
});

Deno.test("startOpsListener() rejects bad requests, counts them and rate-limits the log", async () => {
  const { ops, rejects, warnings } = listen();
  const { port } = ops.addr;
  try {
    const garbage = await exchange(port, "HELLO\r\n\r\n");
    assert.equal(garbage.status, 400);
    assertFraming(garbage);
    assert.equal((await exchange(port, "\x16\x03\x01\x00\xa5\x01\x00")).status, 400);
    assert.equal((await exchange(port, "GET / HTTP/2.0\r\nHost: a\r\n\r\n")).status, 505);
    const tooBig = await exchange(
      port,
      `GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(16 * 1024)}\r\n\r\n`,
    );
    assert.equal(tooBig.status, 431);
    assertFraming(tooBig);
    assert.deepEqual(rejects, [
      "malformed request line",
      "NUL byte in request head",
      "unsupported HTTP version",
      "request head exceeds 8192 bytes",
    ]);
    // Four rejects within a second: one warning line.
    assert.equal(warnings.length, 1);
    assert.deepEqual(warnings[0], {
      msg: "ops listener rejected a request",
      status: 400,
      reason: "malformed request line",
      remote: warnings[0].remote,
    });
  } finally {
    await ops.close();
  }
});

Deno.test("startOpsListener() cuts off a slow client with 408 after readTimeoutMs", async () => {
  const { ops, rejects } = listen({ readTimeoutMs: 200 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: ops.addr.port });
  try {
    const started = performance.now();
    await writeAll(conn, encoder.encode("GET /metrics HTTP/1.1\r\nHost: a\r\n"));
    const response = parseResponse(await readToEnd(conn, 2000));
    const elapsed = performance.now() - started;
    assert.equal(response.status, 408);
    assertFraming(response);
    // Not before the timeout (timers only fire late, never early); how late is the machine's
    // business, so readToEnd's 2 s is only a hang guard.
    assert(elapsed >= 150, `cut off after ${elapsed} ms, before readTimeoutMs`);
    assert.deepEqual(rejects, ["read timeout"]);
  } finally {
    conn.close();
    await ops.close();
  }
});

Deno.test("startOpsListener() closes an idle connection silently after readTimeoutMs", async () => {
  const { ops, rejects } = listen({ readTimeoutMs: 200 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: ops.addr.port });
  try {
    assert.equal((await readToEnd(conn, 2000)).length, 0);
    assert.deepEqual(rejects, []);
  } finally {
    conn.close();
    await ops.close();
  }
});

Deno.test("startOpsListener() evicts the oldest unfinished connection when every slot is taken", async () => {
  const { ops, rejects } = listen({ maxConnections: 2, readTimeoutMs: 5000 });
  const { port } = ops.addr;
  const idle = [
    await Deno.connect({ hostname: "127.0.0.1", port }),
    await Deno.connect({ hostname: "127.0.0.1", port }),
  ];
  try {
    // Both slots hold connections that sent nothing: the probe takes the oldest one's place.
    const probe = await get(port, "/healthz");
    assert.deepEqual([probe.status, probe.body], [200, "ok"]);
    assertFraming(probe);
    assert.equal(await idle[0].read(new Uint8Array(16)).catch(() => null), null, "evicted");
    assert.ok(rejects.some((reason) => reason.startsWith("evicted")), "counted");
  } finally {
    for (const conn of idle) conn.close();
    await ops.close();
  }
});

Deno.test("startOpsListener() answers 503 only when every slot is computing its answer", async () => {
  let release: () => void = () => {};
  const registry = new Registry();
  new Gauge({
    name: "test_slow",
    help: "A gauge whose collection waits for the test.",
    registers: [registry],
    async collect() {
      await new Promise<void>((resolve) => release = resolve);
      this.set(1);
    },
  });
  const { ops, rejects } = listen({ maxConnections: 1, registry });
  const { port } = ops.addr;
  try {
    const slow = get(port, "/metrics");
    await new Promise((resolve) => setTimeout(resolve, 100));
    const refused = await get(port, "/livez");
    assert.deepEqual([refused.status, refused.body], [503, "too many connections"]);
    assertFraming(refused);
    assert.deepEqual(rejects, ["too many connections"], "the refusal is counted");
    release();
    assert.equal((await slow).status, 200);
  } finally {
    release();
    await ops.close();
  }
});

/** Resolves with `op`, or rejects naming `what` when it takes longer than `ms`. */
async function within<T>(op: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([op, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once `condition()` holds, checking every 20 ms; rejects after `ms`. */
async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Reads until the server ends `conn` (EOF or reset); resolves with what it sent. */
async function untilServerCloses(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(1024);
  let text = "";
  try {
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
      text += decoder.decode(buffer.subarray(0, n));
    }
  } catch {
    // A reset ends it too.
  }
  return text;
}

function closeAll(conns: Deno.Conn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** Every probe route with GET and HEAD, then `/metrics`: all must answer 200 on time. */
async function assertProbesAnswer(port: number, when: string): Promise<void> {
  for (const path of ["/livez", "/healthz", "/readyz"]) {
    for (const method of ["GET", "HEAD"]) {
      const response = await within(get(port, path, method), 3000, `${method} ${path} ${when}`);
      assert.equal(response.status, 200, `${method} ${path} ${when}`);
    }
  }
  const metrics = await within(get(port, "/metrics"), 3000, `/metrics ${when}`);
  assert.equal(metrics.status, 200, `/metrics ${when}`);
}

Deno.test("startOpsListener() answers every probe while 200 connections trickle one byte and 50 stay silent", async () => {
  const readTimeoutMs = 1000;
  const { ops, rejects } = listen({ readTimeoutMs });
  const { port } = ops.addr;
  const trickling: Deno.Conn[] = [];
  const silent: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 250; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      if (i % 5 === 4) silent.push(conn);
      else {
        await writeAll(conn, encoder.encode("G"));
        trickling.push(conn);
      }
    }
    // The default 64 slots are all held by attackers now; every probe still gets through.
    await assertProbesAnswer(port, "under the attack");
    // Every attacker is closed: evicted for a newcomer, or cut off after readTimeoutMs.
    await within(
      Promise.all([...trickling, ...silent].map(untilServerCloses)),
      readTimeoutMs + 5000,
      "every attacker closed",
    );
    // A one-byte connection counts once (408: evicted or read timeout); a silent one only
    // when evicted (at its timeout it is closed without a word, like a TCP health check).
    const counted = rejects.filter((r) => r.startsWith("evicted") || r === "read timeout");
    assert.equal(counted.length, rejects.length, `other rejects: ${rejects}`);
    assert(counted.length >= 200 && counted.length <= 250, `${counted.length} counted`);
    assert(!rejects.includes("too many connections"), "nobody got 503");
  } finally {
    closeAll([...trickling, ...silent]);
    await ops.close();
  }
});

Deno.test("startOpsListener() answers every probe while 200 connections send a request and hold the connection", async () => {
  const { ops, rejects } = listen();
  const { port } = ops.addr;
  const holders: Deno.Conn[] = [];
  try {
    // Each asks for /livez and then neither reads nor closes: answered, its slot lingers.
    for (let i = 0; i < 200; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(conn, encoder.encode("GET /livez HTTP/1.1\r\nHost: a\r\n\r\n"));
      holders.push(conn);
    }
    await assertProbesAnswer(port, "while 200 answered connections are held");
    const answers = await within(
      Promise.all(holders.map(untilServerCloses)),
      5000,
      "every holder closed",
    );
    // A holder is answered, or pushed out before its request was read; never refused.
    for (const answer of answers) assert.match(answer, /^$|^HTTP\/1\.1 200 /);
    assert(!rejects.includes("too many connections"), "nobody got 503");
  } finally {
    closeAll(holders);
    await ops.close();
  }
});

Deno.test("startOpsListener() answers every probe while every slot writes /metrics to a client that stopped reading", async () => {
  // Larger than what loopback's socket buffers absorb, so the writes cannot finish.
  const body = "#".repeat(8 * 1024 * 1024);
  const registry = new Registry();
  registry.metrics = () => Promise.resolve(body);
  const maxConnections = 4;
  const writeTimeoutMs = 2000;
  const { ops, rejects } = listen({ maxConnections, registry, writeTimeoutMs });
  const { port } = ops.addr;
  const readers: Deno.Conn[] = [];
  const stalled = () =>
    rejects.filter((r) => r.startsWith("evicted: response not taken") || r === "write timeout");
  try {
    for (let i = 0; i < maxConnections; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(conn, encoder.encode("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"));
      // One chunk proves its answer is being written; then it reads no more.
      const first = await within(conn.read(new Uint8Array(1024)), 3000, "first chunk");
      assert(first !== null && first > 0);
      readers.push(conn);
    }
    await assertProbesAnswer(port, "while every slot writes to a stalled reader");
    assert(
      rejects.some((r) => r.startsWith("evicted: response not taken")),
      `a probe pushed out a stalled writer: ${rejects}`,
    );
    // The rest are cut off at writeTimeoutMs; every one is counted once.
    await until(() => stalled().length === maxConnections, writeTimeoutMs + 5000, "all counted");
    const received = await within(
      Promise.all(readers.map(untilServerCloses)),
      3000,
      "every stalled reader closed",
    );
    for (const text of received) assert(text.length < body.length, "its answer stops short");
    assert.equal(stalled().length, maxConnections, `rejects: ${rejects}`);
    assert(!rejects.includes("too many connections"), "nobody got 503");
  } finally {
    closeAll(readers);
    await ops.close();
  }
});

Deno.test("startOpsListener() a flood from one address does not push out a slow probe from another", async () => {
  const { ops } = listen({ readTimeoutMs: 5000 });
  const { port } = ops.addr;
  const attackers: Deno.Conn[] = [];
  // The probe comes from 127.0.0.2 and sends its request only after 200 newer connections
  // from 127.0.0.1: oldest-first eviction alone would have closed it at the 64th.
  const probe = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" });
  const received: Uint8Array[] = [];
  probe.on("data", (chunk: Uint8Array) => received.push(chunk));
  const ended = new Promise<void>((resolve) => probe.on("close", () => resolve()));
  probe.on("error", () => {});
  try {
    await within(
      new Promise<void>((resolve, reject) => probe.once("connect", resolve).once("error", reject)),
      3000,
      "probe connects",
    );
    for (let i = 0; i < 200; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(conn, encoder.encode("G"));
      attackers.push(conn);
    }
    probe.write(`GET /livez HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    await within(ended, 3000, "probe answered and closed");
    const response = parseResponse(new Uint8Array(Buffer.concat(received)));
    assert.deepEqual([response.status, response.body], [200, "ok"]);
  } finally {
    probe.destroy();
    closeAll(attackers);
    await ops.close();
  }
});

Deno.test("startOpsListener() keeps serving after a burst of 200 random-byte requests", async () => {
  const { ops, rejects } = listen({ readTimeoutMs: 1000 });
  const { port } = ops.addr;
  let seed = 0xb0057;
  const random = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 4294967296;
  };
  const junk = async (): Promise<void> => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const bytes = new Uint8Array(1 + Math.floor(random() * 600));
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
      await writeAll(conn, bytes);
      await conn.closeWrite();
      await readToEnd(conn, 3000);
    } catch (error) {
      // The server may answer and close before all junk is sent; only a hang is a failure.
      if (String(error).includes("no EOF")) throw error;
    } finally {
      try {
        conn.close();
      } catch {
        // Already closed by the read timeout.
      }
    }
  };
  try {
    for (let batch = 0; batch < 200; batch += 20) {
      await Promise.all(Array.from({ length: 20 }, junk));
    }
    assert(rejects.length >= 190, `only ${rejects.length} rejects counted`);
    assert.equal((await get(port, "/healthz")).status, 200);
    assert.equal((await get(port, "/metrics")).status, 200);
  } finally {
    await ops.close();
  }
});

Deno.test("startOpsListener() close() is bounded while a client holds a connection", async () => {
  const { ops } = listen({ closeTimeoutMs: 100 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: ops.addr.port });
  try {
    await writeAll(conn, encoder.encode("GET /metrics HTTP/1.1\r\n"));
    // close() gives up on the held connection after closeTimeoutMs instead of waiting for
    // the client; the 10 s race is a hang guard, not a speed bound.
    let guard: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      ops.close().then(() => true),
      new Promise<false>((r) => guard = setTimeout(() => r(false), 10_000)),
    ]);
    clearTimeout(guard);
    assert(closed, "close() did not return while a client held a connection");
    assert.equal((await readToEnd(conn, 2000)).length, 0);
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: ops.addr.port }));
    await ops.close(); // idempotent
  } finally {
    conn.close();
  }
});

Deno.test("startOpsListener() validates its options", () => {
  const registry = new Registry();
  const health = () => ({ ready: true, draining: false, detail: {} });
  for (const bad of [{ maxConnections: 0 }, { readTimeoutMs: -1 }, { maxHeadBytes: 1.5 }]) {
    assert.throws(
      () => startOpsListener({ hostname: "127.0.0.1", port: 0, registry, health, ...bad }),
      RangeError,
    );
  }
});

Deno.test("startOpsListener() serves /status and /status.json only when given a status source", async () => {
  const without = listen();
  try {
    assert.equal((await get(without.ops.addr.port, "/status")).status, 404);
    assert.equal((await get(without.ops.addr.port, "/status.json")).status, 404);
  } finally {
    await without.ops.close();
  }
  let fail = false;
  const { ops } = listen({
    status: () => {
      if (fail) throw new Error("boom");
      return {
        json: { agents: ["<b>"] },
        page: { title: "<b>", summary: [], sections: [] },
      };
    },
  });
  try {
    const page = await get(ops.addr.port, "/status");
    assert.equal(page.status, 200);
    assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
    assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'none'/);
    assert.equal(page.headers.get("x-frame-options"), "DENY");
    assert.match(page.body, /<title>&lt;b&gt;<\/title>/);
    const json = await get(ops.addr.port, "/status.json?x=1");
    assert.equal(json.status, 200);
    assert.deepEqual(JSON.parse(json.body), { agents: ["<b>"] });
    assert.equal((await get(ops.addr.port, "/status", "POST")).status, 405);
    fail = true;
    assert.equal((await get(ops.addr.port, "/status.json")).status, 500);
  } finally {
    await ops.close();
  }
});
