// Before @peculiar/x509: it needs Reflect metadata at load time.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { equal, throws } from "node:assert/strict";
import { createCa, createClientCertificate, createRelayCertificate } from "./dev_ca.ts";
import { certificateNotAfter, identityFromCertificate } from "./peer_identity.ts";

function der(pem: string): Uint8Array {
  return new Uint8Array(x509.PemConverter.decodeFirst(pem));
}

/** A self-signed certificate with an arbitrary subject, for names dev_ca.ts would refuse. */
async function certWithSubject(subject: x509.JsonName): Promise<Uint8Array> {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, [
    "sign",
    "verify",
  ]);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: subject,
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
  });
  return new Uint8Array(cert.rawData);
}

Deno.test("identityFromCertificate() returns the subject CN", async () => {
  const ca = await createCa();
  equal(
    identityFromCertificate(der((await createClientCertificate(ca, "agent-7")).cert)),
    "agent-7",
  );
  equal(identityFromCertificate(der((await createRelayCertificate(ca)).cert)), "relay");
  equal(identityFromCertificate(der(ca.cert)), "ztna-edge dev CA");
  equal(identityFromCertificate(await certWithSubject([{ O: ["acme"] }, { CN: ["svc"] }])), "svc");
});

Deno.test("identityFromCertificate() returns null instead of throwing", async () => {
  const good = der((await createClientCertificate(await createCa(), "a")).cert);
  equal(identityFromCertificate(null), null);
  equal(identityFromCertificate(undefined), null);
  equal(identityFromCertificate(new Uint8Array()), null);
  equal(identityFromCertificate(new Uint8Array(1200).fill(0x30)), null);
  equal(identityFromCertificate(good.subarray(0, good.length - 10)), null);
  equal(identityFromCertificate(await certWithSubject([{ O: ["no common name"] }])), null);
  equal(identityFromCertificate(await certWithSubject([{ CN: ["a", "b"] }])), null, "ambiguous");
  equal(identityFromCertificate(await certWithSubject([{ CN: [""] }])), null);
});

Deno.test("identityFromCertificate() reads a view into a larger buffer", async () => {
  const cert = der((await createClientCertificate(await createCa(), "offset")).cert);
  const big = new Uint8Array(cert.length + 64);
  big.set(cert, 32);
  equal(identityFromCertificate(big.subarray(32, 32 + cert.length)), "offset");
});

Deno.test("certificateNotAfter() reads the expiry of the first certificate", async () => {
  const now = new Date("2026-06-01T12:00:00Z");
  const ca = await createCa({ now, validityDays: 10 });
  const client = await createClientCertificate(ca, "c", { now, validityDays: 2 });
  equal(certificateNotAfter(client.cert).toISOString(), "2026-06-03T12:00:00.000Z");
  equal(certificateNotAfter(client.cert + ca.cert).toISOString(), "2026-06-03T12:00:00.000Z");
  throws(() => certificateNotAfter("not a certificate"), {
    name: "TypeError",
    message: /^Cannot read certificate expiry as 'pem' must hold a PEM certificate/,
  });
});
