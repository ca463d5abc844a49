/**
 * Stateless Retry tokens: proof that a client owns its source address (RFC 9000 §8.1).
 *
 * A token is `u8 version | u32 issued (s) | u8 odcid length | odcid | mac[16]`, where the
 * MAC is HMAC-SHA256 over everything before it plus the client's address and port.
 *
 * @module
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

const TOKEN_VERSION = 1;
const MAC_LEN = 16;

/** Mints and checks Retry tokens with a per-process secret key. */
export interface RetryTokens {
  /** Returns a token binding `odcid` (the client's original DCID) to `host`/`port`. */
  mint(odcid: Uint8Array, host: string, port: number): Uint8Array;
  /**
   * Returns the original DCID when `token` is authentic, fresh and bound to `host`/`port`;
   * otherwise null.
   */
  verify(token: Uint8Array, host: string, port: number): Uint8Array | null;
}

/** Options for {@linkcode createRetryTokens}. */
export interface RetryTokenOptions {
  /**
   * How long a token stays valid after it was issued.
   * @default {10000}
   */
  lifetimeMs?: number;
  /** HMAC key; a random 32-byte key when absent. */
  key?: Uint8Array;
  /** Clock in milliseconds; injectable for tests. */
  now?: () => number;
}

/**
 * Creates a Retry token minter/verifier.
 *
 * @example
 * ```ts
 * import { createRetryTokens } from "./retry_token.ts";
 * const tokens = createRetryTokens();
 * const odcid = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
 * const token = tokens.mint(odcid, "127.0.0.1", 5000);
 * if (tokens.verify(token, "127.0.0.1", 5000) === null) throw new Error("rejected");
 * if (tokens.verify(token, "127.0.0.2", 5000) !== null) throw new Error("accepted");
 * ```
 */
export function createRetryTokens(options: RetryTokenOptions = {}): RetryTokens {
  const { lifetimeMs = 10_000, key = randomBytes(32), now = Date.now } = options;

  function mac(body: Uint8Array, host: string, port: number): Uint8Array {
    return createHmac("sha256", key).update(body).update(`${host}|${port}`).digest().subarray(
      0,
      MAC_LEN,
    );
  }

  return {
    mint(odcid, host, port) {
      const body = new Uint8Array(6 + odcid.length);
      const view = new DataView(body.buffer);
      body[0] = TOKEN_VERSION;
      view.setUint32(1, Math.floor(now() / 1000));
      body[5] = odcid.length;
      body.set(odcid, 6);
      const token = new Uint8Array(body.length + MAC_LEN);
      token.set(body);
      token.set(mac(body, host, port), body.length);
      return token;
    },
    verify(token, host, port) {
      if (token.length < 6 + MAC_LEN || token[0] !== TOKEN_VERSION) return null;
      const odcidLen = token[5];
      if (odcidLen > 20 || token.length !== 6 + odcidLen + MAC_LEN) return null;
      const body = token.subarray(0, 6 + odcidLen);
      if (!timingSafeEqual(mac(body, host, port), token.subarray(6 + odcidLen))) return null;
      const issuedMs = new DataView(token.buffer, token.byteOffset).getUint32(1) * 1000;
      const age = now() - issuedMs;
      // One second of slack: the issue time is truncated to whole seconds.
      if (age < -1000 || age > lifetimeMs + 1000) return null;
      return token.slice(6, 6 + odcidLen);
    },
  };
}
