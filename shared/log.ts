/**
 * Structured logging: one JSON object per line, with secrets redacted.
 *
 * Every line has `time`, `level`, `msg` and `component`, followed by the caller's fields.
 * Values under secret-looking keys (`token`, `password`, `private_key`, ...) and any string
 * registered with {@linkcode registerSecret} never reach the output.
 *
 * @module
 */

/** Severity of a log line, from least to most severe. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** The log levels in increasing severity, e.g. to build a config enum. */
export const logLevels: readonly ["debug", "info", "warn", "error"] = [
  "debug",
  "info",
  "warn",
  "error",
];

/** Extra key/value pairs added to a log line. */
export type LogFields = Record<string, unknown>;

/** A structured logger bound to one component. */
export interface Logger {
  /** Logs at level `debug`. */
  debug(msg: string, fields?: LogFields): void;
  /** Logs at level `info`. */
  info(msg: string, fields?: LogFields): void;
  /** Logs at level `warn`. */
  warn(msg: string, fields?: LogFields): void;
  /** Logs at level `error`. */
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line (e.g. {conn: "c12"}). */
  child(fields: LogFields): Logger;
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /**
   * Lines below this level are dropped.
   *
   * @default {"info"}
   */
  level?: LogLevel;
  /**
   * Receives each serialized line (without the trailing newline).
   *
   * @default {writes `line + "\n"` to stdout synchronously}
   */
  write?: (line: string) => void;
  /**
   * Clock for the `time` field.
   *
   * @default {() => new Date()}
   */
  now?: () => Date;
}

const severity: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const secretKey = /(token|secret|password|passphrase|private_?key|authorization)/i;
const redacted = "[redacted]";
const maxDepth = 16;
const baseKeys = new Set(["time", "level", "msg", "component"]);

// Process-wide on purpose: a secret resolved by the config loader must be hidden from every
// logger, including ones created before it was resolved.
const secrets = new Set<string>();
let secretsByLength: string[] = [];

/**
 * Registers a secret value: any log line containing it (in any field or msg) shows "[redacted]"
 * instead. Values shorter than 4 characters are ignored, since redacting them would mangle
 * ordinary text.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLogger, registerSecret } from "./log.ts";
 *
 * const lines: string[] = [];
 * registerSecret("hunter2-example");
 * createLogger("relay", { write: (l) => lines.push(l) }).info("pw is hunter2-example");
 * assert.equal(JSON.parse(lines[0]).msg, "pw is [redacted]");
 * ```
 *
 * @param value The secret to hide.
 */
export function registerSecret(value: string): void {
  if (typeof value !== "string" || value.length < 4 || secrets.has(value)) return;
  secrets.add(value);
  // Longest first, so a secret that contains another is replaced whole.
  secretsByLength = [...secrets].sort((a, b) => b.length - a.length);
}

/**
 * Creates a logger that writes one JSON object per line.
 *
 * Fields are serialized defensively: `Error`s become `{name, message}`, bigints become strings,
 * circular references become `"[circular]"`, and logging never throws.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLogger } from "./log.ts";
 *
 * const lines: string[] = [];
 * const log = createLogger("relay", {
 *   write: (line) => lines.push(line),
 *   now: () => new Date(0),
 * });
 * log.child({ conn: "c1" }).info("accepted", { token: "abc" });
 * assert.deepEqual(JSON.parse(lines[0]), {
 *   time: "1970-01-01T00:00:00.000Z",
 *   level: "info",
 *   msg: "accepted",
 *   component: "relay",
 *   conn: "c1",
 *   token: "[redacted]",
 * });
 * ```
 *
 * @param component Name of the emitting component, e.g. `"relay"`.
 * @param options Level, output and clock.
 * @returns The logger.
 */
export function createLogger(component: string, options: LoggerOptions = {}): Logger {
  const { level = "info", write = writeStdout, now = () => new Date() } = options;
  const threshold = severity[level] ?? severity.info;

  function make(bound: LogFields): Logger {
    const emit = (lvl: LogLevel, msg: string, fields?: LogFields): void => {
      if (severity[lvl] < threshold) return;
      const line = formatLine(now, lvl, msg, component, bound, fields);
      try {
        write(line);
      } catch {
        // A closed stdout must not take the process down with it.
      }
    };
    return {
      debug: (msg, fields) => emit("debug", msg, fields),
      info: (msg, fields) => emit("info", msg, fields),
      warn: (msg, fields) => emit("warn", msg, fields),
      error: (msg, fields) => emit("error", msg, fields),
      child: (fields) => make({ ...bound, ...fields }),
    };
  }
  return make({});
}

/**
 * Returns a function that logs at most once per `intervalMs` per key, counting suppressed calls
 * and passing that count to the next emitted call (to be logged as `suppressed: n`).
 *
 * At most 4096 keys are tracked; beyond that, expired keys and then the oldest keys are forgotten,
 * so a flood of distinct keys (e.g. spoofed source addresses) cannot grow memory without bound.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { rateLimitedLog } from "./log.ts";
 *
 * let t = 0;
 * const seen: number[] = [];
 * const limited = rateLimitedLog(1000, () => t);
 * limited("drop", (n) => seen.push(n));
 * limited("drop", (n) => seen.push(n));
 * t = 1000;
 * limited("drop", (n) => seen.push(n));
 * assert.deepEqual(seen, [0, 1]);
 * ```
 *
 * @param intervalMs Minimum time between two emitted calls for one key.
 * @param now Clock in milliseconds.
 * @returns `(key, emit) => void`; `emit` receives the number of calls suppressed since the last one.
 */
export function rateLimitedLog(
  intervalMs: number,
  now: () => number = Date.now,
): (key: string, emit: (suppressed: number) => void) => void {
  if (!Number.isFinite(intervalMs) || intervalMs < 0) {
    throw new RangeError(
      `Cannot create rate limiter as 'intervalMs' must be a finite number >= 0: current value is ${intervalMs}`,
    );
  }
  const maxKeys = 4096;
  const state = new Map<string, { last: number; suppressed: number }>();

  const prune = (t: number): void => {
    for (const [key, entry] of state) {
      if (t - entry.last >= intervalMs) state.delete(key);
    }
    // Map iteration order is insertion order, and emitting re-inserts: the first keys are oldest.
    for (const key of state.keys()) {
      if (state.size <= maxKeys) break;
      state.delete(key);
    }
  };

  return (key, emit) => {
    const t = now();
    const entry = state.get(key);
    if (entry && t - entry.last < intervalMs) {
      entry.suppressed++;
      return;
    }
    const suppressed = entry?.suppressed ?? 0;
    state.delete(key);
    state.set(key, { last: t, suppressed: 0 });
    if (state.size > maxKeys) prune(t);
    emit(suppressed);
  };
}

function formatLine(
  now: () => Date,
  level: LogLevel,
  msg: string,
  component: string,
  bound: LogFields,
  fields: LogFields | undefined,
): string {
  let time: string;
  try {
    time = now().toISOString();
  } catch {
    time = new Date().toISOString();
  }
  try {
    const line: Record<string, unknown> = {
      time,
      level,
      msg: scrub(safeString(msg)),
      component: scrub(safeString(component)),
    };
    const seen = new Set<object>();
    for (const source of [bound, fields]) {
      if (source === null || typeof source !== "object") continue;
      for (const key of Object.keys(source)) {
        // The four base keys identify the line; a field must not overwrite them.
        if (baseKeys.has(key)) continue;
        line[scrub(key)] = secretKey.test(key)
          ? redacted
          : sanitize(readProperty(source, key), seen, 1);
      }
    }
    return JSON.stringify(line);
  } catch (error) {
    // Last resort (e.g. a hostile toJSON): keep the event, drop the fields.
    return JSON.stringify({
      time,
      level,
      msg: scrub(safeString(msg)),
      component: scrub(safeString(component)),
      log_error: scrub(describe(error)),
    });
  }
}

/** Turns any value into JSON-safe data with secret keys and registered secrets removed. */
function sanitize(value: unknown, ancestors: Set<object>, depth: number): unknown {
  switch (typeof value) {
    case "string":
      return scrub(value);
    case "number":
    case "boolean":
      return value;
    case "bigint":
      return value.toString();
    case "undefined":
      return undefined;
    case "symbol":
    case "function":
      return scrub(safeString(value));
  }
  if (value === null) return null;
  const object = value as object;
  if (ancestors.has(object)) return "[circular]";
  if (depth > maxDepth) return "[truncated]";
  if (object instanceof Error) {
    return { name: scrub(safeString(object.name)), message: scrub(safeString(object.message)) };
  }
  if (object instanceof Date) {
    return Number.isNaN(object.getTime()) ? "Invalid Date" : object.toISOString();
  }
  ancestors.add(object);
  try {
    if (Array.isArray(object)) {
      return object.map((item) => sanitize(item, ancestors, depth + 1) ?? null);
    }
    if (object instanceof Map) {
      return sanitize(Object.fromEntries(object), ancestors, depth + 1);
    }
    if (object instanceof Set) {
      return sanitize([...object], ancestors, depth + 1);
    }
    if (object instanceof Uint8Array) {
      return `[${object.length} bytes]`;
    }
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(object)) {
      out[scrub(key)] = secretKey.test(key)
        ? redacted
        : sanitize(readProperty(object, key), ancestors, depth + 1);
    }
    return out;
  } finally {
    // Only ancestors count as circular: the same object twice side by side is fine.
    ancestors.delete(object);
  }
}

function readProperty(object: object, key: string): unknown {
  try {
    return (object as Record<string, unknown>)[key];
  } catch (error) {
    return `[unreadable: ${describe(error)}]`;
  }
}

function scrub(text: string): string {
  for (const secret of secretsByLength) {
    if (text.includes(secret)) text = text.replaceAll(secret, redacted);
  }
  return text;
}

function safeString(value: unknown): string {
  try {
    return String(value);
  } catch {
    return "[unprintable]";
  }
}

function describe(error: unknown): string {
  try {
    return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  } catch {
    return "unknown error";
  }
}

const encoder = new TextEncoder();

function writeStdout(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let offset = 0;
  // writeSync may write fewer bytes than asked (e.g. to a full pipe); loop until done.
  while (offset < bytes.length) {
    offset += Deno.stdout.writeSync(bytes.subarray(offset));
  }
}
