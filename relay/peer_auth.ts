/**
 * Decides who a peer is from what the relay's `auth` mode accepts: its certificate identity,
 * the token in its `hello`, or both. Tokens are held only as SHA-256 hashes and compared in
 * constant time; the accepted set can be replaced at runtime (SIGHUP rotation).
 *
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import { hashToken, type RelayTokens } from "../shared/config/tokens.ts";

/** How connectors and agents authenticate (relay config `auth`). */
export type AuthMode = "mtls" | "token" | "mtls+token";

/** Why a peer was refused (a bounded metrics label). */
export type AuthFailure = "no_identity" | "missing_token" | "bad_token";

/** The outcome of {@linkcode PeerAuth.authenticate}. */
export type AuthResult = { identity: string } | { failure: AuthFailure };

/** The relay's authenticator. */
export interface PeerAuth {
  /** The mode it was created with (fixed for the process: it shapes the TLS context). */
  readonly mode: AuthMode;
  /**
   * Authenticates a peer at its `hello`.
   *
   * @param certIdentity Identity from the client certificate, or null without one.
   * @param token The `hello.token`, if sent.
   */
  authenticate(certIdentity: string | null, token: string | undefined): AuthResult;
  /** Replaces the accepted tokens (reload); connections already up are not affected. */
  setTokens(tokens: RelayTokens): void;
}

/**
 * Creates the authenticator for `mode` accepting `tokens`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { tokenHashText, tokensSchema } from "../shared/config/tokens.ts";
 * import { createPeerAuth } from "./peer_auth.ts";
 *
 * const tokens = tokensSchema().parse({ "agent-1": [tokenHashText("s3cret-agent-token")] });
 * const auth = createPeerAuth("token", tokens);
 * assert.deepEqual(auth.authenticate(null, "s3cret-agent-token"), { identity: "agent-1" });
 * assert.deepEqual(auth.authenticate(null, "guess"), { failure: "bad_token" });
 * ```
 *
 * @param mode The relay's `auth`.
 * @param tokens Accepted tokens per identity.
 * @returns The authenticator.
 */
export function createPeerAuth(mode: AuthMode, tokens: RelayTokens): PeerAuth {
  let entries = flatten(tokens);

  /** The identity owning `token`, comparing against every entry so timing reveals nothing. */
  function owner(token: string, among: string | null): string | null {
    const presented = hashToken(token);
    let found: string | null = null;
    for (const entry of entries) {
      const equal = timingSafeEqual(presented, entry.hash);
      if (equal && (among === null || entry.identity === among)) found = entry.identity;
    }
    return found;
  }

  return {
    mode,
    authenticate(certIdentity, token) {
      if (mode !== "token" && certIdentity === null) return { failure: "no_identity" };
      if (mode === "mtls") return { identity: certIdentity! };
      if (token === undefined || token === "") return { failure: "missing_token" };
      const identity = owner(token, mode === "token" ? null : certIdentity);
      return identity === null ? { failure: "bad_token" } : { identity };
    },
    setTokens(next) {
      entries = flatten(next);
    },
  };
}

function flatten(tokens: RelayTokens): { identity: string; hash: Uint8Array }[] {
  return Object.entries(tokens).flatMap(([identity, list]) =>
    list.map((entry) => ({ identity, hash: entry.hash }))
  );
}
