import assert from "node:assert/strict";
import { seededRandom } from "../protocol/_test_utils.ts";
import { parseRequestHead, type ParseRequestHeadResult } from "./http_request.ts";

const encoder = new TextEncoder();
const parse = (text: string, maxHeadBytes?: number): ParseRequestHeadResult =>
  parseRequestHead(encoder.encode(text), { maxHeadBytes });

function assertRejected(result: ParseRequestHeadResult, status: number, reason?: RegExp): void {
  assert(result.ok === false, `expected a rejection, got ${JSON.stringify(result)}`);
  assert.equal(result.status, status);
  if (reason) assert.match(result.reason, reason);
}

Deno.test("parseRequestHead() parses a complete head and leaves the body", () => {
  const head = "GET /metrics?name=x%20y HTTP/1.1\r\nHost: 127.0.0.1:9090\r\n" +
    "Accept: text/plain\r\naccept:  */*\t\r\nX-Empty:\r\n\r\n";
  const result = parse(head + "body bytes");
  assert(result.ok === true);
  assert.equal(result.method, "GET");
  assert.equal(result.target, "/metrics?name=x%20y");
  assert.equal(result.version, "HTTP/1.1");
  assert.equal(result.headLength, head.length);
  assert.deepEqual(
    [...result.headers],
    [["host", "127.0.0.1:9090"], ["accept", "text/plain, */*"], ["x-empty", ""]],
  );
});

Deno.test("parseRequestHead() accepts HTTP/1.0 without Host and keeps obs-text in values", () => {
  const result = parseRequestHead(
    new Uint8Array([...encoder.encode("HEAD / HTTP/1.0\r\nX-Name: caf"), 0xe9, 13, 10, 13, 10]),
  );
  assert(result.ok === true);
  assert.equal(result.method, "HEAD");
  assert.equal(result.version, "HTTP/1.0");
  assert.equal(result.headers.get("x-name"), "caf\u00e9");
});

Deno.test("parseRequestHead() reports every proper prefix of a valid head as incomplete", () => {
  const head = "GET /readyz HTTP/1.1\r\nHost: a\r\nUser-Agent: kube-probe/1.31\r\n\r\n";
  for (let end = 0; end < head.length; end++) {
    assert.deepEqual(parse(head.slice(0, end)), { ok: "incomplete" }, `prefix of ${end} bytes`);
  }
  assert.equal(parse(head).ok, true);
});

Deno.test("parseRequestHead() rejects malformed heads with 400", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["garbage request line", "HELLO\r\n\r\n", /request line/],
    ["empty request line", "\r\n\r\n", /request line/],
    ["leading empty line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", /request line/],
    ["double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", /./],
    ["absolute-form target", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", /target/],
    ["asterisk-form target", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", /target/],
    ["bad percent-encoding", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", /target/],
    ["fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", /target/],
    ["method with a slash", "GE/T / HTTP/1.1\r\nHost: a\r\n\r\n", /method/],
    ["lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", /version/],
    ["trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", /./],
    ["bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n", /bare LF/],
    ["bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", /bare LF/],
    ["bare CR", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", /bare CR/],
    ["NUL in value", "GET / HTTP/1.1\r\nHost: a\0\r\n\r\n", /NUL/],
    ["obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", /folding/],
    ["whitespace before first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", /folding/],
    ["space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", /name/],
    ["empty field name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", /name/],
    ["no colon", "GET / HTTP/1.1\r\nHost: a\r\nJunk\r\n\r\n", /colon/],
    ["control byte in value", "GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", /value/],
    ["DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n", /value/],
    ["missing Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", /Host/],
    ["repeated Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", /Host/],
  ];
  for (const [name, text, reason] of cases) {
    await t.step(name, () => assertRejected(parse(text), 400, reason));
  }
});

Deno.test("parseRequestHead() rejects junk before the head is complete", () => {
  assertRejected(parse("\x16\x03\x01\x02\x00"), 400); // a TLS ClientHello
  assertRejected(parse("GET x"), 400, /target/);
  assertRejected(parse("G\u00c9T"), 400, /method/);
  assertRejected(parse(" GET"), 400);
  assertRejected(parse("GET /\x01"), 400);
  assert.deepEqual(parse("GET /metrics HTTP/1."), { ok: "incomplete" });
  assert.deepEqual(parse("GET /metrics HTTP/1.1\r"), { ok: "incomplete" });
});

Deno.test("parseRequestHead() rejects other HTTP versions with 505", () => {
  assertRejected(parse("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
  assertRejected(parse("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
  assertRejected(parse("GET / HTTP/0.9\r\n\r\n"), 505);
});

Deno.test("parseRequestHead() enforces the head size and field count with 431", () => {
  const big = `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(16 * 1024)}\r\n\r\n`;
  assertRejected(parse(big), 431, /8192/);
  // Exactly at the limit is accepted, one byte more is not.
  const head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  assert.equal(parse(head, head.length).ok, true);
  assertRejected(parse(head, head.length - 1), 431);
  // An unterminated head reaching the limit cannot complete anymore.
  assertRejected(parse(`GET /${"a".repeat(8192)}`), 431);
  const many = "GET / HTTP/1.1\r\nHost: a\r\n" + "X: y\r\n".repeat(100) + "\r\n";
  assertRejected(parse(many), 431, /header fields/);
});

Deno.test("parseRequestHead() validates its options", () => {
  assert.throws(() => parseRequestHead(new Uint8Array(), { maxHeadBytes: 0 }), RangeError);
  assert.throws(() => parseRequestHead(new Uint8Array(), { maxHeaderCount: 1.5 }), RangeError);
});

Deno.test("parseRequestHead() never throws on random and mutated input (seeded fuzz)", () => {
  const random = seededRandom(0x5eed);
  const valid = encoder.encode("GET /metrics?a=b HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
  const interesting = [0, 9, 10, 13, 32, 58, 47, 127, 255, 0x48];
  const maxHeadBytes = 256;
  for (let i = 0; i < 20_000; i++) {
    let bytes: Uint8Array;
    if (i % 2 === 0) {
      bytes = new Uint8Array(Math.floor(random() * 400));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256);
    } else {
      bytes = valid.slice(0, Math.floor(random() * (valid.length + 1)));
      for (let m = Math.floor(random() * 4); m > 0 && bytes.length > 0; m--) {
        const at = Math.floor(random() * bytes.length);
        bytes[at] = random() < 0.5
          ? interesting[Math.floor(random() * interesting.length)]
          : Math.floor(random() * 256);
      }
    }
    let result: ParseRequestHeadResult;
    try {
      result = parseRequestHead(bytes, { maxHeadBytes });
    } catch (error) {
      throw new Error(`iteration ${i} threw on [${bytes}]`, { cause: error });
    }
    if (result.ok === true) {
      assert(result.headLength <= Math.min(bytes.length, maxHeadBytes), `iteration ${i}`);
      assert(result.target.startsWith("/"), `iteration ${i}`);
    } else if (result.ok === false) {
      assert([400, 431, 505].includes(result.status), `iteration ${i}`);
    } else {
      assert(bytes.length < maxHeadBytes, `iteration ${i}`);
    }
  }
});
