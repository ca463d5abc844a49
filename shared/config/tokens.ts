/**
 * The relay's accepted tokens: per identity, a list of entries that are either a SHA-256
 * hash (`sha256:<64 hex>`, what a relay should normally hold) or a secret reference
 * (`env:NAME`, `file:/path`) hashed at load time. Plain tokens are never accepted inline.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { z } from "zod";
import { identitySchema } from "./common.ts";
import { resolveSecret, type SecretReaders } from "./secret.ts";

/** One accepted token as the relay keeps it: where it came from and its SHA-256 hash. */
export interface TokenEntry {
  /** `sha256:<hex>` or the secret reference; safe to show. */
  readonly ref: string;
  /** SHA-256 of the token (32 bytes). */
  readonly hash: Uint8Array;
}

const hashPattern = /^sha256:[0-9a-f]{64}$/;

/** SHA-256 of a token, 32 bytes. */
export function hashToken(token: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(token, "utf8").digest());
}

/**
 * The config text of a token's hash, `sha256:<hex>` (what operators put in the relay config).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { tokenHashText } from "./tokens.ts";
 *
 * assert.match(tokenHashText("correct horse"), /^sha256:[0-9a-f]{64}$/);
 * ```
 */
export function tokenHashText(token: string): string {
  return `sha256:${Buffer.from(hashToken(token)).toString("hex")}`;
}

/**
 * Builds the zod schema of the relay's `tokens` key: identity → non-empty list of entries.
 * A token listed under two identities is an error, since the token alone names the identity
 * when `auth` is `"token"`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { tokensSchema, tokenHashText } from "./tokens.ts";
 *
 * const tokens = tokensSchema({ env: () => "agent-1-secret-token" }).parse({
 *   "agent-1": ["env:AGENT_1_TOKEN", tokenHashText("next-token-for-rotation")],
 * });
 * assert.equal(tokens["agent-1"].length, 2);
 * assert.equal(tokens["agent-1"][0].hash.length, 32);
 * ```
 *
 * @param readers Where secret references are read from.
 * @returns The schema.
 */
export function tokensSchema(readers: SecretReaders = {}) {
  const { env, readFile } = readers;
  const entry = z.string().transform((text, ctx): TokenEntry => {
    if (text.startsWith("sha256:")) {
      if (!hashPattern.test(text)) {
        ctx.addIssue({ code: "custom", message: "a token hash is sha256: and 64 lowercase hex" });
        return z.NEVER;
      }
      return { ref: text, hash: new Uint8Array(Buffer.from(text.slice(7), "hex")) };
    }
    try {
      return { ref: text, hash: hashToken(resolveSecret(text, env, readFile)) };
    } catch (error) {
      ctx.addIssue({ code: "custom", message: (error as Error).message });
      return z.NEVER;
    }
  });
  return z.record(identitySchema, z.array(entry).min(1, { error: "list at least one token" }))
    .superRefine((tokens, ctx) => {
      const owner = new Map<string, string>();
      for (const [identity, entries] of Object.entries(tokens)) {
        entries.forEach((e, index) => {
          const key = Buffer.from(e.hash).toString("hex");
          const other = owner.get(key);
          if (other !== undefined && other !== identity) {
            ctx.addIssue({
              code: "custom",
              path: [identity, index],
              message: `the same token is also listed for "${other}"`,
            });
          }
          owner.set(key, identity);
        });
      }
    });
}

/** The relay's parsed `tokens`. */
export type RelayTokens = Record<string, TokenEntry[]>;
