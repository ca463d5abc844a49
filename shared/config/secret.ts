/**
 * Secret references in config: `env:NAME` or `file:/path`, never the secret itself.
 *
 * @module
 */
import { z } from "zod";
import { registerSecret } from "../log.ts";

/** Options for {@linkcode resolveSecret} and {@linkcode secretRefSchema}. */
export interface SecretReaders {
  /**
   * Reads an environment variable.
   *
   * @default {Deno.env.get}
   */
  env?: (name: string) => string | undefined;
  /**
   * Reads a file as text.
   *
   * @default {Deno.readTextFileSync}
   */
  readFile?: (path: string) => string;
}

/**
 * Resolves a secret reference (`env:NAME` or `file:/path`) to its value and registers the value
 * with the logger so that it is redacted from every log line. A file's trailing newline is
 * removed.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveSecret } from "./secret.ts";
 *
 * const env = (name: string) => name === "RELAY_TOKEN" ? "s3cr3t-token" : undefined;
 * assert.equal(resolveSecret("env:RELAY_TOKEN", env), "s3cr3t-token");
 * assert.throws(() => resolveSecret("s3cr3t-token"), /not an inline value/);
 * ```
 *
 * @param ref The reference.
 * @param env Reads an environment variable.
 * @param readFile Reads a file as text.
 * @returns The secret value.
 * @throws {TypeError} If `ref` is not a reference, or what it names is missing or empty.
 */
export function resolveSecret(
  ref: string,
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
  readFile: (path: string) => string = Deno.readTextFileSync,
): string {
  const value = readReference(ref, env, readFile);
  registerSecret(value);
  return value;
}

function readReference(
  ref: string,
  env: (name: string) => string | undefined,
  readFile: (path: string) => string,
): string {
  if (typeof ref === "string" && ref.startsWith("env:")) {
    const name = ref.slice(4);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new TypeError(`secret reference "${ref}" must name a variable, e.g. env:RELAY_TOKEN`);
    }
    const value = env(name);
    if (value === undefined || value === "") {
      throw new TypeError(`secret environment variable ${name} is not set`);
    }
    return value;
  }
  if (typeof ref === "string" && ref.startsWith("file:")) {
    const path = ref.slice(5);
    if (path === "") throw new TypeError(`secret reference "file:" must name a file`);
    let text: string;
    try {
      text = readFile(path);
    } catch (error) {
      // Name the file but not the content: a read error never contains the secret.
      const reason = error instanceof Error ? error.message : String(error);
      throw new TypeError(`cannot read secret file ${path}: ${reason}`);
    }
    const value = text.replace(/\r?\n$/, "");
    if (value === "") throw new TypeError(`secret file ${path} is empty`);
    return value;
  }
  // Deliberately does not echo `ref`: it may be the secret pasted inline.
  throw new TypeError("secret must be a reference env:NAME or file:/path, not an inline value");
}

/**
 * Builds a zod schema for a config field holding a secret reference: it validates the reference
 * and resolves it to the secret value at load time.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { secretRefSchema } from "./secret.ts";
 *
 * const schema = secretRefSchema({ readFile: () => "pa55word\n" });
 * assert.equal(schema.parse("file:/run/secrets/pw"), "pa55word");
 * ```
 *
 * @param readers Where references are read from.
 * @returns The schema.
 */
export function secretRefSchema(readers: SecretReaders = {}): z.ZodType<string, string> {
  const { env, readFile } = readers;
  return z.string().transform((ref, ctx) => {
    try {
      return resolveSecret(ref, env, readFile);
    } catch (error) {
      ctx.addIssue({ code: "custom", message: (error as Error).message });
      return z.NEVER;
    }
  });
}

/**
 * A resolved secret that remembers its reference: `ref` (e.g. `env:AGENT_TOKEN`) is safe to
 * show and is what the permission scope is derived from; `value` is not enumerable and
 * `toJSON()` returns the reference, so printing or serializing a config never shows it.
 */
export interface Secret {
  /** The reference from the config, `env:NAME` or `file:/path`. */
  readonly ref: string;
  /** The secret itself (registered with the logger for redaction). */
  readonly value: string;
  /** The reference: what JSON output shows. */
  toJSON(): string;
}

/**
 * Builds a zod schema for a secret reference that resolves at load time to a
 * {@linkcode Secret} (reference plus hidden value).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { secretSchema } from "./secret.ts";
 *
 * const secret = secretSchema({ env: () => "t0ken-value" }).parse("env:AGENT_TOKEN");
 * assert.equal(secret.value, "t0ken-value");
 * assert.equal(JSON.stringify({ token: secret }), '{"token":"env:AGENT_TOKEN"}');
 * ```
 *
 * @param readers Where references are read from.
 * @returns The schema.
 */
export function secretSchema(readers: SecretReaders = {}): z.ZodType<Secret, string> {
  const { env, readFile } = readers;
  return z.string().transform((ref, ctx) => {
    try {
      return toSecret(ref, resolveSecret(ref, env, readFile));
    } catch (error) {
      ctx.addIssue({ code: "custom", message: (error as Error).message });
      return z.NEVER;
    }
  });
}

/** Wraps a resolved value with its reference (see {@linkcode Secret}). */
export function toSecret(ref: string, value: string): Secret {
  const secret = { ref, toJSON: () => ref } as Secret;
  Object.defineProperty(secret, "value", { value, enumerable: false });
  return Object.freeze(secret);
}
