/**
 * The identity of an mTLS peer, read from the certificate quiche verified.
 *
 * @module
 */

import "reflect-metadata";
import { X509Certificate } from "@peculiar/x509";

/**
 * Returns the subject common name of a DER certificate, such as `conn.peerCertChain()[0]` of
 * a quiche connection whose peer certificate was verified against the deployment's CA.
 *
 * Returns `null` instead of throwing when the input is missing or not a certificate, or when
 * the subject has no CN, an empty CN or several CNs (an ambiguous identity is no identity).
 * This function does not verify anything: call it only on a chain the TLS stack accepted.
 *
 * @example Usage
 * ```ts
 * import { identityFromCertificate } from "./peer_identity.ts";
 * import { equal } from "node:assert/strict";
 *
 * equal(identityFromCertificate(new Uint8Array([1, 2, 3])), null);
 * equal(identityFromCertificate(undefined), null);
 * ```
 *
 * @param der The DER encoded certificate.
 * @returns The subject CN, or `null`.
 */
export function identityFromCertificate(der: Uint8Array | null | undefined): string | null {
  if (!(der instanceof Uint8Array) || der.byteLength === 0) return null;
  try {
    // Copied: the parser wants an ArrayBuffer-backed view, the binding may hand out any.
    const names = new X509Certificate(new Uint8Array(der)).subjectName.getField("CN");
    return names.length === 1 && names[0] !== "" ? names[0] : null;
  } catch {
    return null;
  }
}

/**
 * Returns the end of the validity period of the first certificate in a PEM string, for the
 * certificate-expiry metric and startup warnings.
 *
 * @example Usage
 * ```ts
 * import { createCa } from "./dev_ca.ts";
 * import { certificateNotAfter } from "./peer_identity.ts";
 * import { ok } from "node:assert/strict";
 *
 * const ca = await createCa({ validityDays: 10 });
 * ok(certificateNotAfter(ca.cert).getTime() > Date.now());
 * ```
 *
 * @param pem A PEM encoded certificate (or chain; the first certificate counts).
 * @returns The certificate's `notAfter` date.
 * @throws {TypeError} If `pem` holds no parseable certificate.
 */
export function certificateNotAfter(pem: string): Date {
  try {
    return new X509Certificate(pem).notAfter;
  } catch (error) {
    throw new TypeError(
      `Cannot read certificate expiry as 'pem' must hold a PEM certificate: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
}
