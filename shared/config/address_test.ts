import assert from "node:assert/strict";
import {
  formatHostPort,
  hostPortSchema,
  metricsAddressSchema,
  parseHostPort,
  parseServiceUrl,
  serviceUrlSchema,
} from "./address.ts";

Deno.test("parseHostPort()", async (t) => {
  await t.step("accepts IPv4, names, bracketed IPv6 and ports 0..65535", () => {
    assert.deepEqual(parseHostPort("127.0.0.1:4433"), { host: "127.0.0.1", port: 4433 });
    assert.deepEqual(parseHostPort("localhost:0"), { host: "localhost", port: 0 });
    assert.deepEqual(parseHostPort("[::1]:4433"), { host: "::1", port: 4433 });
    assert.deepEqual(parseHostPort("[fe80::1%eth0]:1"), { host: "fe80::1%eth0", port: 1 });
    assert.deepEqual(parseHostPort("relay.example.com:65535"), {
      host: "relay.example.com",
      port: 65535,
    });
    assert.deepEqual(parseHostPort("0.0.0.0:4433"), { host: "0.0.0.0", port: 4433 });
  });

  await t.step("rejects bad input with a message that says why", () => {
    const cases: Array<[string, RegExp]> = [
      ["127.0.0.1", /expected host:port, e\.g\. 127\.0\.0\.1:4433/],
      ["", /expected host:port/],
      ["::1:4433", /put IPv6 addresses in brackets/],
      ["host:65536", /port must be an integer 0\.\.65535/],
      ["host:-1", /port must be an integer/],
      ["host:", /port must be an integer/],
      ["host:44a", /port must be an integer/],
      [":4433", /invalid host name ""/],
      ["256.1.1.1:1", /invalid IPv4 address/],
      ["1.2.3:1", /invalid IPv4 address/],
      ["[127.0.0.1]:1", /invalid IPv6 address/],
      ["[::g]:1", /invalid IPv6 address/],
      ["bad host:1", /invalid host name/],
      ["[::1]4433", /expected host:port/],
    ];
    for (const [text, message] of cases) {
      assert.throws(() => parseHostPort(text), { name: "TypeError", message }, text);
    }
  });
});

Deno.test("formatHostPort() round-trips with parseHostPort()", () => {
  for (const text of ["127.0.0.1:4433", "[::1]:0", "localhost:9090", "[2001:db8::5]:53"]) {
    assert.equal(formatHostPort(parseHostPort(text)), text);
  }
});

Deno.test("parseServiceUrl()", async (t) => {
  await t.step("accepts udp:// and tcp://", () => {
    assert.deepEqual(parseServiceUrl("udp://127.0.0.1:7"), {
      protocol: "udp",
      host: "127.0.0.1",
      port: 7,
    });
    assert.deepEqual(parseServiceUrl("tcp://[::1]:53"), { protocol: "tcp", host: "::1", port: 53 });
  });

  await t.step("rejects other schemes and bad addresses", () => {
    assert.throws(() => parseServiceUrl("http://a:1"), /expected udp:\/\/host:port or tcp/);
    assert.throws(() => parseServiceUrl("127.0.0.1:53"), /expected udp:\/\/host:port/);
    assert.throws(() => parseServiceUrl("udp://a:1/path"), /port must be an integer/);
    assert.throws(() => parseServiceUrl("udp://a:99999"), /in service URL "udp:\/\/a:99999"/);
  });
});

Deno.test("address schemas", async (t) => {
  await t.step("parse to objects", () => {
    assert.deepEqual(hostPortSchema.parse("[::1]:1"), { host: "::1", port: 1 });
    assert.deepEqual(serviceUrlSchema.parse("tcp://a:2"), { protocol: "tcp", host: "a", port: 2 });
    assert.deepEqual(metricsAddressSchema.parse("127.0.0.1:0"), { host: "127.0.0.1", port: 0 });
  });

  await t.step("metrics accepts off as null", () => {
    assert.equal(metricsAddressSchema.parse("off"), null);
  });

  await t.step("report the parse failure as the issue message", () => {
    const result = hostPortSchema.safeParse("nope");
    assert.equal(result.success, false);
    assert.match(result.error!.issues[0].message, /^expected host:port, e\.g\. 127\.0\.0\.1:4433/);
    const wrongType = metricsAddressSchema.safeParse(9090);
    assert.match(wrongType.error!.issues[0].message, /expected host:port.*or "off"/);
  });
});
