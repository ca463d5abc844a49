/**
 * The settable fields ("leaves") of a config schema, and how to read a leaf's value from text.
 *
 * Environment variables and command-line flags address leaves: walking the nested
 * `z.object` shapes yields one leaf per field that is not itself an object; records and arrays
 * are leaves whose value is given whole.
 *
 * @module
 */
import { z } from "zod";

/** How a leaf's value is read from env/flag text. */
export type LeafKind = "string" | "number" | "boolean" | "json" | "list";

/** One settable field of a config schema. */
export interface ConfigLeaf {
  /** Path segments, e.g. `["tls", "cert"]`. */
  path: string[];
  /** Dotted path, as used by flags: `tls.cert`. */
  name: string;
  /** Environment variable: `ZTNA_TLS_CERT`. */
  env: string;
  /** How text is turned into the value. */
  kind: LeafKind;
  /** True when the schema has neither a default nor `.optional()` for this leaf. */
  required: boolean;
  /** The leaf's schema, wrappers (default, optional) included: docs read its type and default. */
  schema: z.ZodType;
  /** The leaf's `.describe()` text, from any of its wrappers; docs/CONFIG.md prints it. */
  description?: string;
}

/**
 * Lists the leaves of an object schema, depth first in shape order.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { configLeaves } from "./leaves.ts";
 *
 * const leaves = configLeaves(z.object({ tls: z.object({ cert: z.string() }), n: z.number() }));
 * assert.deepEqual(leaves.map((l) => [l.name, l.env, l.kind]), [
 *   ["tls.cert", "ZTNA_TLS_CERT", "string"],
 *   ["n", "ZTNA_N", "number"],
 * ]);
 * ```
 *
 * @param schema The config schema (a `z.object`, possibly wrapped).
 * @returns Its leaves; empty if the schema is not an object.
 */
export function configLeaves(schema: z.ZodType): ConfigLeaf[] {
  const leaves: ConfigLeaf[] = [];
  const walk = (node: z.ZodType, path: string[], required: boolean): void => {
    const { inner, optional } = unwrap(node);
    if (inner instanceof z.ZodObject) {
      for (const [key, child] of Object.entries(inner.shape as Record<string, z.ZodType>)) {
        walk(child, [...path, key], required && !optional);
      }
      return;
    }
    if (path.length === 0) return;
    leaves.push({
      path,
      name: path.join("."),
      env: `ZTNA_${path.join("_").toUpperCase()}`,
      kind: kindOf(inner),
      required: required && !optional,
      schema: node,
      description: describedText(node),
    });
  };
  walk(schema, [], true);
  return leaves;
}

/**
 * Turns env/flag text into a leaf value: JSON for numbers, booleans, objects and records; the
 * text itself for strings; for lists of strings a JSON array or comma-separated items.
 * Text that is not valid JSON is returned unchanged, so the schema reports the type mismatch.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseLeafText } from "./leaves.ts";
 *
 * assert.equal(parseLeafText("number", "42"), 42);
 * assert.equal(parseLeafText("string", "42"), "42");
 * assert.deepEqual(parseLeafText("list", "a:1,b:2"), ["a:1", "b:2"]);
 * ```
 *
 * @param kind The leaf's kind.
 * @param text The raw text.
 * @returns The value to validate.
 */
export function parseLeafText(kind: LeafKind, text: string): unknown {
  switch (kind) {
    case "string":
      return text;
    case "list":
      if (text.trimStart().startsWith("[")) return parseJsonOr(text);
      return text.split(",").map((item) => item.trim()).filter((item) => item !== "");
    default:
      return parseJsonOr(text);
  }
}

function parseJsonOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Strips default/prefault/optional/nullable/readonly wrappers, noting optionality. */
function unwrap(node: z.ZodType): { inner: z.ZodType; optional: boolean } {
  let inner = node;
  let optional = false;
  for (;;) {
    if (
      inner instanceof z.ZodDefault || inner instanceof z.ZodPrefault ||
      inner instanceof z.ZodOptional
    ) {
      optional = true;
      inner = inner.unwrap() as z.ZodType;
    } else if (inner instanceof z.ZodNullable || inner instanceof z.ZodReadonly) {
      inner = inner.unwrap() as z.ZodType;
    } else {
      return { inner, optional };
    }
  }
}

/** The outermost `.describe()` text on `node` or the wrappers inside it. */
function describedText(node: z.ZodType): string | undefined {
  let current: z.ZodType = node;
  for (;;) {
    if (current.description !== undefined) return current.description;
    if (
      current instanceof z.ZodDefault || current instanceof z.ZodPrefault ||
      current instanceof z.ZodOptional || current instanceof z.ZodNullable ||
      current instanceof z.ZodReadonly
    ) {
      current = current.unwrap() as z.ZodType;
    } else {
      return undefined;
    }
  }
}

/** The kind of input a leaf schema accepts; pipes (transforms) are judged by their input. */
function kindOf(node: z.ZodType): LeafKind {
  const { inner } = unwrap(node);
  if (inner instanceof z.ZodPipe) return kindOf(inner.in as z.ZodType);
  if (inner instanceof z.ZodString || inner instanceof z.ZodEnum) return "string";
  if (inner instanceof z.ZodLiteral) {
    return inner.values.size > 0 && [...inner.values].every((v) => typeof v === "string")
      ? "string"
      : "json";
  }
  if (inner instanceof z.ZodNumber) return "number";
  if (inner instanceof z.ZodBoolean) return "boolean";
  if (inner instanceof z.ZodArray) {
    return kindOf(inner.element as z.ZodType) === "string" ? "list" : "json";
  }
  return "json";
}
