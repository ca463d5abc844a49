/**
 * The audit log: one JSON line per flow and control event (who reached what, and why), to
 * stdout beside the logs or to a file with size-based rotation. The schema is in
 * docs/AUDIT.md.
 *
 * Writing a record never waits for the destination: the record is serialized into a bounded
 * queue and an asynchronous writer drains it. A full queue drops the new record
 * (`queue_full`); a destination that fails (missing folder, unwritable file, full disk)
 * drops what it was given (`write_error`) and is retried after a pause. Both are counted,
 * so a stalled or broken destination costs audit lines, never flows.
 *
 * @module
 */
/** What an audit record is about. */
export type AuditEvent =
  | "flow_open"
  | "flow_refused"
  | "flow_close"
  | "register"
  | "deregister"
  | "policy_reload"
  | "auth_failure"
  | "channel_open"
  | "channel_close";

/** Every event, in the order of the docs (e.g. to pre-create metric series). */
export const AUDIT_EVENTS: readonly AuditEvent[] = [
  "flow_open",
  "flow_refused",
  "flow_close",
  "register",
  "deregister",
  "policy_reload",
  "auth_failure",
  "channel_open",
  "channel_close",
];

/** Why a record was dropped. */
export type AuditDropReason = "queue_full" | "write_error";

/** Where records go. */
export type AuditDestination =
  | { kind: "off" }
  | { kind: "stdout" }
  | {
    kind: "file";
    /** The live file; rotated ones are `<path>.1` (newest) to `<path>.<keep>`. */
    path: string;
    /** The live file is rotated before a write would take it past this size. */
    maxBytes: number;
    /** Rotated files kept. */
    keep: number;
  };

/** The sink the writer drains into; injectable for tests. */
export interface AuditSink {
  /** Writes all of `bytes` (rotating first when needed); rejects on failure. */
  write(bytes: Uint8Array): Promise<void>;
  /** Releases the destination; the next write opens it again. */
  close(): void;
}

/** Options for {@linkcode createAuditLog}. */
export interface AuditLogOptions {
  /** The writing component, in every record. */
  component: "relay" | "connector" | "agent";
  destination: AuditDestination;
  /** Fields in every record after `component` (e.g. the relay id). @default {{}} */
  fields?: Record<string, unknown>;
  /**
   * Records waiting for the writer at most; more are dropped (`queue_full`).
   * @default {4096}
   */
  maxQueue?: number;
  /**
   * Pause after a failed write before the destination is tried again.
   * @default {1000}
   */
  retryMs?: number;
  /** Clock for the `time` field. @default {() => new Date()} */
  now?: () => Date;
  /** The sink; by default built from `destination`. */
  sink?: AuditSink;
}

/** A running audit log. */
export interface AuditLog {
  /** False when the destination is `off`: callers may skip building records. */
  readonly enabled: boolean;
  /** Queues one record; never blocks and never throws. */
  write(event: AuditEvent, fields: Record<string, unknown>): void;
  /** Records written, by event (running totals). */
  readonly written: Readonly<Record<string, number>>;
  /** Records dropped, by reason (running totals). */
  readonly dropped: Readonly<Record<AuditDropReason, number>>;
  /** Records waiting for the writer. */
  readonly queued: number;
  /** Resolves once the queue is empty, or after `timeoutMs`; false on the timeout. */
  flush(timeoutMs?: number): Promise<boolean>;
  /** Flushes (bounded by `timeoutMs`), then releases the destination. */
  close(timeoutMs?: number): Promise<void>;
}

/** Largest string field value kept whole; longer ones (peer-chosen text) are cut. */
const MAX_FIELD_CHARS = 512;
/** Most bytes handed to the sink in one write. */
const MAX_BATCH_BYTES = 64 * 1024;
const encoder = new TextEncoder();

/**
 * The files an audit file destination writes (the live one and every rotated one): what the
 * sandbox must let the process write, and nothing more.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { auditFilePaths } from "./audit_log.ts";
 *
 * assert.deepEqual(auditFilePaths("/var/log/ztna/audit.jsonl", 2), [
 *   "/var/log/ztna/audit.jsonl",
 *   "/var/log/ztna/audit.jsonl.1",
 *   "/var/log/ztna/audit.jsonl.2",
 * ]);
 * ```
 *
 * @param path The live file.
 * @param keep Rotated files kept.
 * @returns The paths, live file first.
 */
export function auditFilePaths(path: string, keep: number): string[] {
  return [path, ...Array.from({ length: keep }, (_, i) => `${path}.${i + 1}`)];
}

/**
 * Creates an audit log.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createAuditLog } from "./audit_log.ts";
 *
 * const written: string[] = [];
 * const audit = createAuditLog({
 *   component: "relay",
 *   destination: { kind: "stdout" },
 *   fields: { relay_id: "r1" },
 *   now: () => new Date(0),
 *   sink: { write: async (b) => void written.push(new TextDecoder().decode(b)), close() {} },
 * });
 * audit.write("flow_open", { identity: "agent-1", service: "echo" });
 * assert(await audit.flush(1000));
 * assert.deepEqual(JSON.parse(written[0]), {
 *   time: "1970-01-01T00:00:00.000Z",
 *   audit: "flow_open",
 *   component: "relay",
 *   relay_id: "r1",
 *   identity: "agent-1",
 *   service: "echo",
 * });
 * ```
 *
 * @param options Destination, bound fields and limits.
 * @returns The audit log.
 */
export function createAuditLog(options: AuditLogOptions): AuditLog {
  const {
    component,
    destination,
    fields: bound = {},
    maxQueue = 4096,
    retryMs = 1000,
    now = () => new Date(),
  } = options;
  if (!Number.isSafeInteger(maxQueue) || maxQueue < 1) {
    throw new RangeError(
      `Cannot create audit log as 'maxQueue' must be a positive integer: current value is ${maxQueue}`,
    );
  }
  const enabled = destination.kind !== "off";
  const sink = options.sink ?? (enabled ? defaultSink(destination) : null);
  const written: Record<string, number> = {};
  const dropped: Record<AuditDropReason, number> = { queue_full: 0, write_error: 0 };
  const queue: { event: AuditEvent; line: string }[] = [];
  let pumping: Promise<void> | null = null;
  let retryAt = 0;
  let closed = false;
  const idle: (() => void)[] = [];

  function line(event: AuditEvent, fields: Record<string, unknown>): string {
    let time: string;
    try {
      time = now().toISOString();
    } catch {
      time = new Date().toISOString();
    }
    const record: Record<string, unknown> = { time, audit: event, component };
    for (const source of [bound, fields]) {
      for (const [key, value] of Object.entries(source)) {
        // The three leading keys name the record: a field never overwrites them.
        if (value === undefined || key in record) continue;
        record[key] = typeof value === "string" && value.length > MAX_FIELD_CHARS
          ? value.slice(0, MAX_FIELD_CHARS)
          : value;
      }
    }
    return JSON.stringify(record) + "\n";
  }

  async function pump(): Promise<void> {
    while (queue.length > 0 && sink !== null) {
      const wait = retryAt - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      // A batch of whole lines: one write per burst, not one per record.
      let bytes = 0;
      let count = 0;
      while (count < queue.length && (count === 0 || bytes < MAX_BATCH_BYTES)) {
        bytes += queue[count].line.length;
        count++;
      }
      const batch = queue.splice(0, count);
      try {
        await sink.write(encoder.encode(batch.map((r) => r.line).join("")));
        for (const { event } of batch) written[event] = (written[event] ?? 0) + 1;
      } catch {
        dropped.write_error += batch.length;
        retryAt = Date.now() + retryMs;
        try {
          sink.close();
        } catch {
          // Already released.
        }
      }
    }
    pumping = null;
    for (const resolve of idle.splice(0)) resolve();
  }

  return {
    enabled,
    write(event, fields) {
      if (!enabled || closed) return;
      if (queue.length >= maxQueue) {
        dropped.queue_full++;
        return;
      }
      try {
        queue.push({ event, line: line(event, fields) });
      } catch {
        // A field JSON cannot represent (a bigint, a cycle): the caller's bug, not the peer's.
        dropped.write_error++;
        return;
      }
      pumping ??= pump();
    },
    written,
    dropped,
    get queued() {
      return queue.length;
    },
    async flush(timeoutMs = 2000) {
      if (queue.length === 0 && pumping === null) return true;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = await Promise.race([
        new Promise<boolean>((resolve) => idle.push(() => resolve(true))),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), timeoutMs)),
      ]);
      clearTimeout(timer);
      return done;
    },
    async close(timeoutMs = 2000) {
      await this.flush(timeoutMs);
      closed = true;
      try {
        sink?.close();
      } catch {
        // Already released.
      }
    },
  };
}

function defaultSink(destination: AuditDestination): AuditSink {
  if (destination.kind === "file") return fileSink(destination);
  return {
    async write(bytes) {
      // Whole lines of at most a few hundred bytes: one pipe write each up to PIPE_BUF, so
      // they do not interleave with the log lines written synchronously beside them.
      for (let offset = 0; offset < bytes.length;) {
        offset += await Deno.stdout.write(bytes.subarray(offset));
      }
    },
    close() {},
  };
}

/**
 * A file sink with size-based rotation: before a write that would take the live file past
 * `maxBytes`, `<path>.<keep-1>` becomes `<path>.<keep>` ... and the live file `<path>.1`.
 */
function fileSink(destination: AuditDestination & { kind: "file" }): AuditSink {
  const { path, maxBytes, keep } = destination;
  let file: Deno.FsFile | null = null;
  let size = 0;

  async function open(): Promise<Deno.FsFile> {
    if (file !== null) return file;
    const opened = await Deno.open(path, { append: true, create: true, mode: 0o640 });
    try {
      // seek, not stat: stat needs read access, and the sandbox grants the file for writing.
      size = await opened.seek(0, Deno.SeekMode.End);
    } catch (error) {
      opened.close();
      throw error;
    }
    return file = opened;
  }

  async function rotate(): Promise<void> {
    file?.close();
    file = null;
    const paths = auditFilePaths(path, keep);
    if (keep === 0) {
      await Deno.truncate(path, 0);
      return;
    }
    for (let i = paths.length - 2; i >= 0; i--) {
      try {
        await Deno.rename(paths[i], paths[i + 1]);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
  }

  return {
    async write(bytes) {
      let target = await open();
      if (size > 0 && size + bytes.length > maxBytes) {
        await rotate();
        target = await open();
      }
      for (let offset = 0; offset < bytes.length;) {
        const n = await target.write(bytes.subarray(offset));
        offset += n;
        size += n;
      }
    },
    close() {
      const current = file;
      file = null;
      current?.close();
    },
  };
}
