/**
 * A development certificate authority for mTLS between relay, connectors and agents.
 *
 * Everything is EC P-256 signed with ECDSA SHA-256 through WebCrypto and `@peculiar/x509`,
 * and returned as PEM strings that quiche's `Config.withBoringSslCtx` accepts directly.
 *
 * @module
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";

/** A certificate and its private key, both PEM encoded. */
export interface CertificateAndKey {
  /** The certificate, `-----BEGIN CERTIFICATE-----`. */
  cert: string;
  /** The PKCS#8 private key, `-----BEGIN PRIVATE KEY-----`. */
  key: string;
}

/** Options shared by every certificate this module issues. */
export interface ValidityOptions {
  /**
   * The moment the certificate is issued; it is valid from five minutes before (clock skew).
   * @default {new Date()}
   */
  now?: Date;
  /**
   * How many days the certificate stays valid after `now`.
   * @default {3650 for a CA, 365 for the relay and clients}
   */
  validityDays?: number;
}

/** Options for {@linkcode createCa}. */
export interface CaOptions extends ValidityOptions {
  /**
   * The subject common name of the CA.
   * @default {"ztna-edge dev CA"}
   */
  commonName?: string;
}

/** Options for {@linkcode createRelayCertificate}. */
export interface RelayCertificateOptions extends ValidityOptions {
  /**
   * DNS names the relay is reached by, in addition to `localhost` and `relay`.
   * @default {[]}
   */
  dnsNames?: string[];
}

/** The rule identity names (client certificate CNs) follow. */
export const IDENTITY_NAME_PATTERN: RegExp = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;

// RFC 1123 host name: labels of letters, digits and inner hyphens, optionally one leading `*.`.
const DNS_NAME_PATTERN =
  /^(\*\.)?(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

const EC_KEY: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
const SIGNING: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };
const DAY_MS = 86_400_000;
const SKEW_MS = 5 * 60_000;

/**
 * Throws a `RangeError` unless `name` is a valid identity name: 1 to 128 characters of
 * letters, digits, `.`, `_`, `@` and `-`, starting with a letter or digit.
 *
 * @example Usage
 * ```ts
 * import { assertIdentityName } from "./dev_ca.ts";
 * import { throws } from "node:assert/strict";
 *
 * assertIdentityName("connector-1");
 * throws(() => assertIdentityName("../etc"), RangeError);
 * ```
 *
 * @param name The candidate identity name.
 */
export function assertIdentityName(name: string): void {
  if (typeof name !== "string" || !IDENTITY_NAME_PATTERN.test(name)) {
    throw new RangeError(
      `Cannot use identity name as 'name' must match ${IDENTITY_NAME_PATTERN}: current value is ${
        JSON.stringify(name)
      }`,
    );
  }
}

/**
 * Throws a `RangeError` unless `name` is a DNS host name (RFC 1123 labels, optionally `*.`
 * first) that a relay certificate may carry.
 *
 * @example Usage
 * ```ts
 * import { assertDnsName } from "./dev_ca.ts";
 * import { throws } from "node:assert/strict";
 *
 * assertDnsName("relay.example.com");
 * throws(() => assertDnsName("relay example"), RangeError);
 * ```
 *
 * @param name The candidate DNS name.
 */
export function assertDnsName(name: string): void {
  if (typeof name !== "string" || !DNS_NAME_PATTERN.test(name)) {
    throw new RangeError(
      `Cannot use relay DNS name as 'dnsNames' must hold DNS host names: current value is ${
        JSON.stringify(name)
      }`,
    );
  }
}

/**
 * Creates a self-signed CA (basicConstraints CA, keyUsage keyCertSign + cRLSign).
 *
 * @example Usage
 * ```ts
 * import { createCa } from "./dev_ca.ts";
 * import { match } from "node:assert/strict";
 *
 * const ca = await createCa();
 * match(ca.cert, /^-----BEGIN CERTIFICATE-----/);
 * match(ca.key, /^-----BEGIN PRIVATE KEY-----/);
 * ```
 *
 * @param options Subject name and validity.
 * @returns The CA certificate and private key.
 */
export async function createCa(options: CaOptions = {}): Promise<CertificateAndKey> {
  const { commonName = "ztna-edge dev CA", now = new Date(), validityDays = 3650 } = options;
  assertValidityDays(validityDays);
  const keys = await generateKeyPair();
  const name: x509.JsonName = [{ CN: [commonName] }];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialNumber(),
    subject: name,
    issuer: name,
    notBefore: new Date(now.getTime() - SKEW_MS),
    notAfter: new Date(now.getTime() + validityDays * DAY_MS),
    signingAlgorithm: SIGNING,
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: toPem(cert), key: await privateKeyPem(keys.privateKey) };
}

/**
 * Issues the relay's server certificate: CN `relay`, SAN DNS `localhost`, `relay` and
 * `options.dnsNames`, SAN IP `127.0.0.1` and `::1`, extendedKeyUsage serverAuth.
 *
 * @example Usage
 * ```ts
 * import { createCa, createRelayCertificate } from "./dev_ca.ts";
 * import { match } from "node:assert/strict";
 *
 * const ca = await createCa();
 * const relay = await createRelayCertificate(ca, { dnsNames: ["relay.example.test"] });
 * match(relay.cert, /^-----BEGIN CERTIFICATE-----/);
 * ```
 *
 * @param ca The issuing CA (as returned by {@linkcode createCa} or read from disk).
 * @param options Extra DNS names and validity.
 * @returns The relay certificate and private key.
 */
export async function createRelayCertificate(
  ca: CertificateAndKey,
  options: RelayCertificateOptions = {},
): Promise<CertificateAndKey> {
  const { dnsNames = [], now = new Date(), validityDays = 365 } = options;
  for (const dnsName of dnsNames) assertDnsName(dnsName);
  const dns = [...new Set(["localhost", "relay", ...dnsNames])];
  return await issueLeaf(ca, {
    commonName: "relay",
    altNames: [
      ...dns.map((value): x509.JsonGeneralName => ({ type: "dns", value })),
      { type: "ip", value: "127.0.0.1" },
      { type: "ip", value: "::1" },
    ],
    usage: [x509.ExtendedKeyUsage.serverAuth],
    now,
    validityDays,
  });
}

/**
 * Issues a client certificate for a connector or agent: CN `name`, SAN URI
 * `ztna://identity/<name>`, extendedKeyUsage clientAuth and serverAuth.
 *
 * @example Usage
 * ```ts
 * import { createCa, createClientCertificate } from "./dev_ca.ts";
 * import { identityFromCertificate } from "./peer_identity.ts";
 * import { equal } from "node:assert/strict";
 * import { X509Certificate } from "@peculiar/x509";
 *
 * const ca = await createCa();
 * const client = await createClientCertificate(ca, "connector-1");
 * const der = new Uint8Array(new X509Certificate(client.cert).rawData);
 * equal(identityFromCertificate(der), "connector-1");
 * ```
 *
 * @param ca The issuing CA.
 * @param name The identity; must satisfy {@linkcode assertIdentityName}.
 * @param options Validity.
 * @returns The client certificate and private key.
 */
export async function createClientCertificate(
  ca: CertificateAndKey,
  name: string,
  options: ValidityOptions = {},
): Promise<CertificateAndKey> {
  assertIdentityName(name);
  const { now = new Date(), validityDays = 365 } = options;
  return await issueLeaf(ca, {
    commonName: name,
    altNames: [{ type: "url", value: `ztna://identity/${name}` }],
    // serverAuth too: a connector is the TLS server of its end-to-end sessions with agents
    // (docs/PROTOCOL.md §7), and BoringSSL checks the server purpose there.
    usage: [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth],
    now,
    validityDays,
  });
}

/**
 * Tells whether `certPem` was signed by the CA certificate `caCertPem` (issuer name and
 * signature; validity dates are not checked). `false` for anything unparseable.
 *
 * @example Usage
 * ```ts
 * import { certificateIssuedBy, createCa, createClientCertificate } from "./dev_ca.ts";
 * import { equal } from "node:assert/strict";
 *
 * const [ca, other] = [await createCa(), await createCa()];
 * const client = await createClientCertificate(ca, "agent-1");
 * equal(await certificateIssuedBy(client.cert, ca.cert), true);
 * equal(await certificateIssuedBy(client.cert, other.cert), false);
 * ```
 *
 * @param certPem The certificate to check.
 * @param caCertPem The candidate issuer.
 * @returns Whether the CA issued the certificate.
 */
export async function certificateIssuedBy(certPem: string, caCertPem: string): Promise<boolean> {
  try {
    const cert = new x509.X509Certificate(certPem);
    const ca = new x509.X509Certificate(caCertPem);
    return cert.issuer === ca.subject &&
      await cert.verify({ publicKey: ca.publicKey, signatureOnly: true });
  } catch {
    return false;
  }
}

interface LeafParams {
  commonName: string;
  altNames: x509.JsonGeneralName[];
  usage: x509.ExtendedKeyUsage[];
  now: Date;
  validityDays: number;
}

async function issueLeaf(ca: CertificateAndKey, params: LeafParams): Promise<CertificateAndKey> {
  assertValidityDays(params.validityDays);
  const issuer = await loadCa(ca);
  const keys = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialNumber(),
    subject: [{ CN: [params.commonName] }],
    issuer: issuer.cert.subjectName,
    notBefore: new Date(params.now.getTime() - SKEW_MS),
    notAfter: new Date(params.now.getTime() + params.validityDays * DAY_MS),
    signingAlgorithm: SIGNING,
    publicKey: keys.publicKey,
    signingKey: issuer.signingKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(params.usage),
      new x509.SubjectAlternativeNameExtension(params.altNames),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.cert),
    ],
  });
  return { cert: toPem(cert), key: await privateKeyPem(keys.privateKey) };
}

/** Parses the CA PEMs and checks that the key belongs to the certificate and may sign. */
async function loadCa(
  ca: CertificateAndKey,
): Promise<{ cert: x509.X509Certificate; signingKey: CryptoKey }> {
  const cert = new x509.X509Certificate(ca.cert);
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (!basic?.ca) {
    throw new RangeError(
      `Cannot issue certificate as 'ca.cert' must be a CA certificate: current value is ${cert.subject}`,
    );
  }
  const der = x509.PemConverter.decodeFirst(ca.key);
  // Imported extractable once to compare its public point with the certificate's: a CA key
  // that does not match its certificate would issue certificates no peer can verify.
  const extractable = await crypto.subtle.importKey("pkcs8", der, EC_KEY, true, ["sign"]);
  const privateJwk = await crypto.subtle.exportKey("jwk", extractable);
  const publicJwk = await crypto.subtle.exportKey(
    "jwk",
    await cert.publicKey.export(EC_KEY, ["verify"]),
  );
  if (privateJwk.x !== publicJwk.x || privateJwk.y !== publicJwk.y) {
    throw new RangeError(
      `Cannot issue certificate as 'ca.key' must be the key of 'ca.cert': current value is a different key`,
    );
  }
  const signingKey = await crypto.subtle.importKey("pkcs8", der, EC_KEY, false, ["sign"]);
  return { cert, signingKey };
}

function assertValidityDays(validityDays: number): void {
  if (!Number.isInteger(validityDays) || validityDays < 1) {
    throw new RangeError(
      `Cannot issue certificate as 'validityDays' must be a positive integer: current value is ${validityDays}`,
    );
  }
}

async function generateKeyPair(): Promise<CryptoKeyPair> {
  // Extractable so the private key can be exported as PKCS#8 for the key file.
  return await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
}

/** 128 random bits as a positive, non-zero DER INTEGER in hex (RFC 5280: at most 20 octets). */
function randomSerialNumber(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] & 0x7f) | 0x01;
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function toPem(cert: x509.X509Certificate): string {
  return `${cert.toString("pem")}\n`;
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", key);
  return `${x509.PemConverter.encode(pkcs8, "PRIVATE KEY")}\n`;
}
