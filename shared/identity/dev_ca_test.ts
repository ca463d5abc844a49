// Before @peculiar/x509: it needs Reflect metadata at load time.
import "reflect-metadata";
import quic from "@matrixai/quic";
import * as x509 from "@peculiar/x509";
import { X509Certificate } from "@peculiar/x509";
import { deepEqual, equal, match, notEqual, ok, rejects, throws } from "node:assert/strict";
import {
  assertIdentityName,
  type CertificateAndKey,
  createCa,
  createClientCertificate,
  createRelayCertificate,
} from "./dev_ca.ts";
import { identityFromCertificate } from "./peer_identity.ts";

const quiche = quic.native.quiche;
type Connection = ReturnType<typeof quiche.Connection.accept>;

const DAY_MS = 86_400_000;

/** The subject alternative names of a certificate as `type:value` strings. */
function altNames(cert: X509Certificate): string[] {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  return san?.names.items.map((name) => `${name.type}:${name.value}`) ?? [];
}

Deno.test("createCa() makes a self-signed P-256 CA valid for about ten years", async () => {
  const now = new Date("2026-01-01T00:00:00Z");
  const ca = await createCa({ now });
  match(ca.cert, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
  match(ca.key, /^-----BEGIN PRIVATE KEY-----\n[\s\S]+-----END PRIVATE KEY-----\n$/);
  const cert = new X509Certificate(ca.cert);
  equal(cert.subject, "CN=ztna-edge dev CA");
  equal(cert.issuer, cert.subject);
  ok(await cert.verify({ signatureOnly: true }));
  equal(cert.notAfter.getTime(), now.getTime() + 3650 * DAY_MS);
  ok(cert.notBefore < now, "backdated for clock skew");
  equal(cert.getExtension(x509.BasicConstraintsExtension)?.ca, true);
  equal(
    cert.getExtension(x509.KeyUsagesExtension)?.usages,
    x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
  );
  equal(cert.publicKey.algorithm.name, "ECDSA");
  equal((cert.publicKey.algorithm as EcKeyAlgorithm).namedCurve, "P-256");
});

Deno.test("createRelayCertificate() names localhost, relay, loopback IPs and extra DNS names", async () => {
  const ca = await createCa();
  const relay = await createRelayCertificate(ca, { dnsNames: ["relay.example.test", "relay"] });
  const cert = new X509Certificate(relay.cert);
  equal(cert.subject, "CN=relay");
  equal(cert.issuer, "CN=ztna-edge dev CA");
  ok(await cert.verify({ publicKey: new X509Certificate(ca.cert).publicKey, signatureOnly: true }));
  deepEqual(altNames(cert), [
    "dns:localhost",
    "dns:relay",
    "dns:relay.example.test",
    "ip:127.0.0.1",
    "ip:::1",
  ]);
  deepEqual(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages, [
    x509.ExtendedKeyUsage.serverAuth,
  ]);
  equal(cert.getExtension(x509.BasicConstraintsExtension)?.ca, false);
  await rejects(
    () => createRelayCertificate(ca, { dnsNames: ["bad name"] }),
    { name: "RangeError", message: /'dnsNames' must hold DNS host names/ },
  );
});

Deno.test("createClientCertificate() puts the name in CN and a ztna:// SAN URI", async () => {
  const ca = await createCa();
  const now = new Date("2026-03-01T00:00:00Z");
  const client = await createClientCertificate(ca, "agent.alice@example", { now });
  const cert = new X509Certificate(client.cert);
  equal(cert.subject, "CN=agent.alice@example");
  equal(cert.notAfter.getTime(), now.getTime() + 365 * DAY_MS);
  deepEqual(altNames(cert), ["url:ztna://identity/agent.alice@example"]);
  deepEqual(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages, [
    x509.ExtendedKeyUsage.clientAuth,
    x509.ExtendedKeyUsage.serverAuth,
  ]);
  equal(cert.getExtension(x509.BasicConstraintsExtension)?.ca, false);
  equal(cert.getExtension(x509.KeyUsagesExtension)?.usages, x509.KeyUsageFlags.digitalSignature);
});

Deno.test("serial numbers are random, positive and 16 bytes", async () => {
  const ca = await createCa();
  const serials = await Promise.all(
    [1, 2, 3].map(async () =>
      new X509Certificate((await createClientCertificate(ca, "c")).cert).serialNumber
    ),
  );
  equal(new Set([...serials, new X509Certificate(ca.cert).serialNumber]).size, 4);
  for (const serial of serials) match(serial, /^[0-7][0-9a-f]{31}$/);
});

Deno.test("identity names are validated with a RangeError", async () => {
  for (const good of ["a", "connector-1", "A.b_c@d-e", "x".repeat(128)]) assertIdentityName(good);
  for (const bad of ["", "-lead", ".hidden", "../x", "a/b", "a b", "x".repeat(129), "é"]) {
    throws(() => assertIdentityName(bad), {
      name: "RangeError",
      message: /^Cannot use identity name as 'name' must match .*: current value is /,
    });
  }
  const ca = await createCa();
  await rejects(() => createClientCertificate(ca, "../../etc/passwd"), RangeError);
});

Deno.test("issuing refuses a CA key that does not belong to the CA certificate", async () => {
  const [a, b] = await Promise.all([createCa(), createCa()]);
  await rejects(
    () => createClientCertificate({ cert: a.cert, key: b.key }, "x"),
    { name: "RangeError", message: /'ca.key' must be the key of 'ca.cert'/ },
  );
  const leaf = await createClientCertificate(a, "leaf");
  await rejects(() => createClientCertificate(leaf, "x"), /must be a CA certificate/);
  await rejects(() => createCa({ validityDays: 0 }), RangeError);
});

// --- mTLS through quiche (the TLS stack the relay uses) ---------------------------------------

const SERVER_ADDR = { host: "127.0.0.1", port: 4433 };
const CLIENT_ADDR = { host: "127.0.0.1", port: 50000 };
const encoder = new TextEncoder();

function config(caPem: string, own: CertificateAndKey) {
  const cfg = quiche.Config.withBoringSslCtx(
    true,
    false,
    encoder.encode(caPem),
    [encoder.encode(own.key)],
    [encoder.encode(own.cert)],
    null,
  );
  cfg.setApplicationProtos(["ztna/1"]);
  cfg.setMaxIdleTimeout(5000);
  cfg.setInitialMaxData(1 << 20);
  cfg.setInitialMaxStreamDataBidiLocal(1 << 18);
  cfg.setInitialMaxStreamDataBidiRemote(1 << 18);
  cfg.setInitialMaxStreamsBidi(16);
  return cfg;
}

interface HandshakeResult {
  client: Connection;
  server: Connection;
  /** Errors thrown by `recv`, prefixed with the side that threw. */
  errors: string[];
}

/** Pumps packets between two in-process connections until neither has anything to send. */
function handshake(
  serverName: string | null,
  server: { ca: string; own: CertificateAndKey },
  client: { ca: string; own: CertificateAndKey },
): HandshakeResult {
  const scid = () => crypto.getRandomValues(new Uint8Array(20));
  const c = quiche.Connection.connect(
    serverName,
    scid(),
    CLIENT_ADDR,
    SERVER_ADDR,
    config(client.ca, client.own),
  );
  const s = quiche.Connection.accept(
    scid(),
    null,
    SERVER_ADDR,
    CLIENT_ADDR,
    config(server.ca, server.own),
  );
  const buf = new Uint8Array(65_536);
  const errors: string[] = [];
  const flush = (from: Connection, to: Connection, side: string, info: typeof CLIENT_ADDR[]) => {
    let moved = false;
    for (let sent = from.send(buf); sent !== null; sent = from.send(buf)) {
      moved = true;
      try {
        to.recv(buf.subarray(0, sent[0]), { from: info[0], to: info[1] });
      } catch (error) {
        errors.push(`${side}: ${error}`);
      }
    }
    return moved;
  };
  // Bounded: a handshake takes a few flights; stop early once both sides fall silent.
  for (let round = 0; round < 50; round++) {
    const a = flush(c, s, "server", [CLIENT_ADDR, SERVER_ADDR]);
    const b = flush(s, c, "client", [SERVER_ADDR, CLIENT_ADDR]);
    if (!a && !b) break;
  }
  return { client: c, server: s, errors };
}

Deno.test("mTLS through quiche: the relay reads each client's identity from its certificate", async () => {
  const ca = await createCa();
  const relay = await createRelayCertificate(ca);
  for (const name of ["connector-1", "agent-alice"]) {
    const own = await createClientCertificate(ca, name);
    const { client, server, errors } = handshake("localhost", { ca: ca.cert, own: relay }, {
      ca: ca.cert,
      own,
    });
    deepEqual(errors, []);
    ok(client.isEstablished() && server.isEstablished());
    equal(identityFromCertificate(server.peerCertChain()![0]), name);
    equal(identityFromCertificate(client.peerCertChain()![0]), "relay");
  }
});

Deno.test("mTLS through quiche: a client certificate from another CA is refused", async () => {
  const ca = await createCa();
  const rogue = await createCa({ commonName: "rogue CA" });
  const relay = await createRelayCertificate(ca);
  // The client trusts the real CA (so it accepts the relay) but its certificate is the rogue's.
  const own = await createClientCertificate(rogue, "connector-1");
  const { client, server, errors } = handshake("localhost", { ca: ca.cert, own: relay }, {
    ca: ca.cert,
    own,
  });
  ok(!server.isEstablished());
  ok(errors.some((e) => e.startsWith("server: Error: TlsFail")), errors.join());
  // 0x100 + TLS alert 48 (unknown_ca), sent by the server and received by the client.
  equal(server.localError()?.errorCode, 0x100 + 48);
  equal(client.peerError()?.errorCode, 0x100 + 48);
  // TLS 1.3: the client's handshake completes before the server has checked its certificate,
  // so a client learns of its rejection only from the close that follows: a connector must not
  // count itself connected until the relay has answered on the control stream.
  ok(client.isEstablished());
  ok(client.isDraining() || client.isClosed());
});

Deno.test("mTLS through quiche: an expired client certificate is refused", async () => {
  const ca = await createCa({ now: new Date("2020-01-01T00:00:00Z") });
  const relay = await createRelayCertificate(ca);
  const own = await createClientCertificate(ca, "stale", {
    now: new Date("2020-01-01T00:00:00Z"),
    validityDays: 1,
  });
  const { server } = handshake("localhost", { ca: ca.cert, own: relay }, { ca: ca.cert, own });
  ok(!server.isEstablished());
  // 0x100 + TLS alert 45 (certificate_expired).
  equal(server.localError()?.errorCode, 0x100 + 45);
});

Deno.test("mTLS through quiche: the relay name is checked against DNS SANs only", async () => {
  const ca = await createCa();
  const relay = await createRelayCertificate(ca, { dnsNames: ["relay.example.test"] });
  const own = await createClientCertificate(ca, "agent-1");
  const attempt = (name: string | null) =>
    handshake(name, { ca: ca.cert, own: relay }, { ca: ca.cert, own });
  for (const name of ["localhost", "relay", "relay.example.test", "LOCALHOST"]) {
    ok(attempt(name).client.isEstablished(), name);
  }
  // BoringSSL (as quiche 0.18 sets it up) matches the server name as a host name only: the
  // certificate's IP SANs never match, so clients must dial the relay by a DNS name.
  for (const name of ["127.0.0.1", "::1", "other.example.test"]) {
    const { client, server } = attempt(name);
    ok(!client.isEstablished() && !server.isEstablished(), name);
    // 0x100 + TLS alert 42 (bad_certificate), raised by the client.
    equal(client.localError()?.errorCode, 0x100 + 42, name);
  }
  // Without a server name quiche verifies the chain but no name at all: never pass null.
  const unnamed = attempt(null);
  ok(unnamed.client.isEstablished());
  notEqual(unnamed.server.peerCertChain(), null);
});
