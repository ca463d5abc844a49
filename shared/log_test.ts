import assert from "node:assert/strict";
import { createLogger, type LoggerOptions, rateLimitedLog, registerSecret } from "./log.ts";

function capture(options: LoggerOptions = {}) {
  const lines: string[] = [];
  const log = createLogger("test", {
    write: (line) => lines.push(line),
    now: () => new Date(Date.UTC(2026, 0, 2, 3, 4, 5)),
    ...options,
  });
  const parsed = () => lines.map((line) => JSON.parse(line));
  return { log, lines, parsed };
}

Deno.test("createLogger()", async (t) => {
  await t.step("writes one JSON object per line with the base fields first", () => {
    const { log, lines } = capture();
    log.info("ready", { listen: "127.0.0.1:4433" });
    assert.equal(lines.length, 1);
    assert.equal(
      lines[0],
      '{"time":"2026-01-02T03:04:05.000Z","level":"info","msg":"ready","component":"test",' +
        '"listen":"127.0.0.1:4433"}',
    );
  });

  await t.step("filters by level", () => {
    const { log, parsed } = capture({ level: "warn" });
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    assert.deepEqual(parsed().map((l) => [l.level, l.msg]), [["warn", "w"], ["error", "e"]]);
  });

  await t.step("defaults to level info", () => {
    const { log, parsed } = capture();
    log.debug("d");
    log.info("i");
    assert.deepEqual(parsed().map((l) => l.msg), ["i"]);
  });

  await t.step("child loggers add fields; call fields win; base keys are kept", () => {
    const { log, parsed } = capture();
    const conn = log.child({ conn: "c12" });
    const flow = conn.child({ flow: 7 });
    flow.info("opened", { flow: 8, level: "bogus", msg: "bogus" });
    conn.info("closed");
    const [first, second] = parsed();
    assert.equal(first.conn, "c12");
    assert.equal(first.flow, 8);
    assert.equal(first.level, "info");
    assert.equal(first.msg, "opened");
    assert.deepEqual(second, {
      time: "2026-01-02T03:04:05.000Z",
      level: "info",
      msg: "closed",
      component: "test",
      conn: "c12",
    });
  });

  await t.step("redacts values under secret-looking keys, recursively", () => {
    const { log, parsed } = capture();
    log.info("auth", {
      token: "t",
      Authorization: "Bearer x",
      nested: { db_password: "p", privateKey: "k", private_key: "k2", list: [{ secret: 1 }] },
      passphrase: { whole: "object" },
      keep: "visible",
    });
    assert.deepEqual(parsed()[0].nested, {
      db_password: "[redacted]",
      privateKey: "[redacted]",
      private_key: "[redacted]",
      list: [{ secret: "[redacted]" }],
    });
    assert.equal(parsed()[0].token, "[redacted]");
    assert.equal(parsed()[0].Authorization, "[redacted]");
    assert.equal(parsed()[0].passphrase, "[redacted]");
    assert.equal(parsed()[0].keep, "visible");
  });

  await t.step("redacts registered secret values anywhere in the line", () => {
    const { log, lines, parsed } = capture();
    registerSecret("s3cr3t-value-1");
    registerSecret("s3cr3t-value-1-longer");
    registerSecret('qu"ote\\d');
    registerSecret("abc"); // too short: ignored
    log.child({ ctx: "has s3cr3t-value-1 inside" }).warn("msg s3cr3t-value-1-longer", {
      nested: { deep: ["x s3cr3t-value-1 y"] },
      err: new Error('bad qu"ote\\d'),
      ["key-s3cr3t-value-1"]: 1,
      short: "abc",
    });
    assert.ok(!lines[0].includes("s3cr3t"));
    assert.ok(!lines[0].includes("ote"));
    const line = parsed()[0];
    assert.equal(line.msg, "msg [redacted]");
    assert.equal(line.ctx, "has [redacted] inside");
    assert.deepEqual(line.nested, { deep: ["x [redacted] y"] });
    assert.deepEqual(line.err, { name: "Error", message: "bad [redacted]" });
    assert.equal(line["key-[redacted]"], 1);
    assert.equal(line.short, "abc");
  });

  await t.step("serializes errors, bigints, dates, maps and byte arrays", () => {
    const { log, parsed } = capture();
    const error = new TypeError("boom");
    log.error("failed", {
      error,
      n: 12345678901234567890n,
      at: new Date(0),
      m: new Map([["a", 1]]),
      bytes: new Uint8Array(3),
    });
    const line = parsed()[0];
    assert.deepEqual(line.error, { name: "TypeError", message: "boom" });
    assert.equal(line.n, "12345678901234567890");
    assert.equal(line.at, "1970-01-01T00:00:00.000Z");
    assert.deepEqual(line.m, { a: 1 });
    assert.equal(line.bytes, "[3 bytes]");
  });

  await t.step("never throws: circular objects, throwing getters and writers", () => {
    const { log, parsed } = capture();
    const loop: Record<string, unknown> = { name: "loop" };
    loop.self = loop;
    const shared = { x: 1 };
    const hostile = {
      get boom(): never {
        throw new Error("getter");
      },
    };
    log.info("odd", { loop, pair: [shared, shared], hostile, fn: () => 1 });
    const line = parsed()[0];
    assert.deepEqual(line.loop, { name: "loop", self: "[circular]" });
    assert.deepEqual(line.pair, [{ x: 1 }, { x: 1 }]);
    assert.deepEqual(line.hostile, { boom: "[unreadable: Error: getter]" });

    const failing = createLogger("test", {
      write: () => {
        throw new Error("closed");
      },
    });
    failing.error("still fine");
  });

  await t.step("an unprintable message still produces a line", () => {
    const { log, parsed } = capture();
    const bad = {
      toString() {
        throw new Error("no string");
      },
    };
    log.info(bad as unknown as string);
    assert.equal(parsed()[0].level, "info");
    assert.equal(parsed()[0].msg, "[unprintable]");
  });
});

Deno.test("rateLimitedLog()", async (t) => {
  await t.step("emits once per interval per key and counts suppressed calls", () => {
    let now = 10_000;
    const emitted: Array<[string, number]> = [];
    const limited = rateLimitedLog(1000, () => now);
    const call = (key: string) => limited(key, (n) => emitted.push([key, n]));

    call("a");
    call("a");
    call("a");
    call("b");
    now += 999;
    call("a");
    now += 1;
    call("a");
    call("a");
    now += 1000;
    call("a");
    call("b");
    assert.deepEqual(emitted, [["a", 0], ["b", 0], ["a", 3], ["a", 1], ["b", 0]]);
  });

  await t.step("the count is meant for a suppressed field on the next line", () => {
    let now = 0;
    const { log, parsed } = capture();
    const limited = rateLimitedLog(500, () => now);
    for (let i = 0; i < 5; i++) {
      limited("src", (suppressed) => log.warn("dropped", { suppressed }));
    }
    now = 500;
    limited("src", (suppressed) => log.warn("dropped", { suppressed }));
    assert.deepEqual(parsed().map((l) => l.suppressed), [0, 4]);
  });

  await t.step("forgets keys beyond its capacity instead of growing", () => {
    const now = 0;
    const limited = rateLimitedLog(1000, () => now);
    let emitted = 0;
    for (let i = 0; i < 5000; i++) limited(`k${i}`, () => emitted++);
    // The oldest keys were evicted, so they may emit again; the newest are still limited.
    limited("k0", () => emitted++);
    limited("k4999", () => emitted++);
    assert.equal(emitted, 5001);
  });

  await t.step("rejects a bad interval", () => {
    assert.throws(() => rateLimitedLog(-1), RangeError);
    assert.throws(() => rateLimitedLog(Number.NaN), RangeError);
  });
});
