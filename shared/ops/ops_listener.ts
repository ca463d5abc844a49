/**
 * The ops listener: metrics and health probes over a raw `Deno.listen` TCP socket.
 *
 * It speaks just enough HTTP/1.1 for Prometheus and Kubernetes probes: one request per
 * connection, GET and HEAD only, `Connection: close`. Every resource an outside client can hold
 * is bounded: head size, read time, write time, concurrent connections.
 *
 * Free slots never decide whether a probe is answered: when every slot is taken, a newcomer
 * takes the place of a connection that is not computing its answer right now. First choice is
 * one already answered and only lingering; next, one still sending its request head, taken from
 * the source address that holds the most of those (oldest first), so a flood from one address
 * evicts its own connections before a probe from another; last, the oldest one still writing
 * its answer (a client that stopped reading). Only when every slot is computing an answer
 * (collecting metrics) does a newcomer get 503. So connections that trickle bytes, send
 * nothing, send a request and then hold the connection, or stop reading their answer cannot
 * make `/livez` fail (70 one-byte connections once filled all 64 slots, and a kubelet would
 * have restarted the pod). A probe's own answer is computed at once and fits in any socket
 * buffer, so it never holds its slot for long.
 *
 * @module
 */

import type { Registry } from "prom-client";
import { DEFAULT_MAX_HEAD_BYTES, parseRequestHead, type RequestHead } from "./http_request.ts";
import { rateLimitedLog } from "../log.ts";
import { bindAddress } from "../bind_error.ts";
import { renderStatusPage, type StatusPage } from "./status_page.ts";

/** What a component reports to the probes; computed per request, never cached. */
export interface HealthReport {
  /** Registered/listening and able to serve traffic. */
  ready: boolean;
  /** Shutting down: readiness fails even if `ready` is still true. */
  draining: boolean;
  /** Extra fields merged into the `/health` JSON body (must be JSON-serialisable). */
  detail: Record<string, unknown>;
}

/** What `/status` and `/status.json` show; computed per request. */
export interface StatusReport {
  /** The `/status.json` body (must be JSON-serialisable). */
  json: unknown;
  /** The `/status` page. */
  page: StatusPage;
}

/** The part of a structured logger the listener uses. */
export interface OpsLogger {
  warn(msg: string, fields?: Record<string, unknown>): void;
  debug?(msg: string, fields?: Record<string, unknown>): void;
}

/** Options for {@linkcode startOpsListener}. */
export interface OpsListenerOptions {
  /** Address to bind, e.g. "127.0.0.1" or "0.0.0.0". */
  hostname: string;
  /** Port to bind; 0 picks an ephemeral port (read it back from `addr`). */
  port: number;
  /** Registry served on `/metrics`. */
  registry: Registry;
  /** Called once per `/readyz` and `/health` request. */
  health: () => HealthReport;
  /** Serves `/status` (HTML) and `/status.json` when given; both are 404 without it. */
  status?: () => StatusReport;
  /** Receives rate-limited warnings (at most one per second) and per-connection debug lines. */
  logger?: OpsLogger;
  /**
   * Largest accepted request head in bytes; larger heads get 431.
   * @default {8192}
   */
  maxHeadBytes?: number;
  /**
   * Time a client has to send its complete request head; slower clients get 408.
   * @default {5000}
   */
  readTimeoutMs?: number;
  /**
   * Time a client has to take the complete response before the connection is cut.
   * @default {10000}
   */
  writeTimeoutMs?: number;
  /**
   * Connections served at once. Beyond it a newcomer evicts a connection that is lingering
   * after its answer, still sending its request head or still writing its answer; when every
   * one is computing its answer, the newcomer gets 503 and is closed.
   * @default {64}
   */
  maxConnections?: number;
  /**
   * How long `close()` waits for requests in flight before cutting their connections.
   * @default {2000}
   */
  closeTimeoutMs?: number;
  /**
   * Called once per rejected request (400/408/431/505; 408 also for a connection evicted
   * before its head was complete or before it took its whole answer, and for one that did not
   * take its answer within `writeTimeoutMs`) and once per connection refused with 503, so the
   * component can count them.
   */
  onBadRequest?: (reason: string, status: number) => void;
}

/** A running ops listener. */
export interface OpsListener {
  /** The bound address; `port` is the real one when 0 was requested. */
  readonly addr: { hostname: string; port: number };
  /** Stops accepting, waits (bounded by `closeTimeoutMs`) for requests in flight, then resolves. */
  close(): Promise<void>;
}

/**
 * Where a served connection is: `reading` its request head, `computing` its answer,
 * `writing` it, or `lingering` after the answer was written. Only `computing` is never evicted.
 */
type Phase = "reading" | "computing" | "writing" | "lingering";

interface Slot {
  phase: Phase;
}

interface Reply {
  status: number;
  contentType: string;
  body: Uint8Array;
  headers?: [string, string][];
}

const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};
const TEXT = "text/plain; charset=utf-8";
const JSON_TYPE = "application/json; charset=utf-8";
const ROUTES = new Set(["/metrics", "/healthz", "/livez", "/readyz", "/health"]);
const STATUS_ROUTES = new Set(["/status", "/status.json"]);
const HTML = "text/html; charset=utf-8";
// After the response, keep reading briefly so unread request bytes do not turn our close into
// a TCP reset that destroys the response before the client reads it.
const LINGER_MS = 500;
const LINGER_MAX_BYTES = 64 * 1024;
// A failing accept (e.g. EMFILE) is retried after a pause instead of spinning.
const ACCEPT_RETRY_MS = 50;
const TIMED_OUT: unique symbol = Symbol("timed out");
const encoder = new TextEncoder();

/**
 * Binds `hostname:port` and serves `/metrics`, `/healthz`, `/livez`, `/readyz` and `/health`
 * until `close()`.
 *
 * Throws (synchronously) only for invalid options or when the address cannot be bound; after
 * that, no client behaviour makes the accept loop throw or affects other connections.
 *
 * @example Usage
 * ```ts
 * import { Registry } from "prom-client";
 * import { startOpsListener } from "./ops_listener.ts";
 * import assert from "node:assert/strict";
 *
 * const ops = startOpsListener({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   registry: new Registry(),
 *   health: () => ({ ready: true, draining: false, detail: {} }),
 * });
 * assert(ops.addr.port > 0);
 * await ops.close();
 * ```
 *
 * @param options Address, registry, health source and limits.
 * @returns The running listener.
 */
export function startOpsListener(options: OpsListenerOptions): OpsListener {
  const {
    hostname,
    port,
    registry,
    health,
    status,
    logger,
    maxHeadBytes = DEFAULT_MAX_HEAD_BYTES,
    readTimeoutMs = 5000,
    writeTimeoutMs = 10_000,
    maxConnections = 64,
    closeTimeoutMs = 2000,
    onBadRequest,
  } = options;
  requirePositiveInteger("maxHeadBytes", maxHeadBytes, 16);
  requirePositiveInteger("readTimeoutMs", readTimeoutMs);
  requirePositiveInteger("writeTimeoutMs", writeTimeoutMs);
  requirePositiveInteger("maxConnections", maxConnections);
  requirePositiveInteger("closeTimeoutMs", closeTimeoutMs);

  const listener = bindAddress(
    hostname,
    port,
    () => Deno.listen({ hostname, port, transport: "tcp" }),
  );
  const addr = { hostname: listener.addr.hostname, port: listener.addr.port };
  // Clients choose how often these fire: at most one line per message per second.
  const limit = rateLimitedLog(1000, () => performance.now());
  const warn = (msg: string, fields: Record<string, unknown>) =>
    limit(
      msg,
      (suppressed) => logger?.warn(msg, suppressed > 0 ? { ...fields, suppressed } : fields),
    );
  const debug = (msg: string, fields?: Record<string, unknown>) => logger?.debug?.(msg, fields);
  /** Served connections, oldest first. */
  const served = new Map<Deno.Conn, Slot>();
  /** Connections being told 503; bounded by `maxConnections` as well. */
  const refused = new Map<Deno.Conn, Slot>();
  const handlers = new Set<Promise<void>>();
  let closing = false;

  function count(status: number, reason: string): void {
    try {
      onBadRequest?.(reason, status);
    } catch (error) {
      debug("onBadRequest callback failed", { error: String(error) });
    }
  }

  function reportBadRequest(conn: Deno.Conn, status: number, reason: string): void {
    count(status, reason);
    warn("ops listener rejected a request", { status, reason, remote: remoteOf(conn) });
  }

  async function serve(conn: Deno.Conn, slot: Slot): Promise<void> {
    const io = timedConn(conn);
    const buffer = new Uint8Array(maxHeadBytes);
    const deadline = performance.now() + readTimeoutMs;
    let length = 0;
    let reply: Reply | undefined;
    let isHead = false;
    try {
      while (reply === undefined) {
        const n = await io.read(buffer.subarray(length), deadline - performance.now());
        if (n === TIMED_OUT || n === null) {
          // A connection that sent nothing (a TCP probe, an idle client) is closed silently.
          if (length === 0) return;
          slot.phase = "computing";
          const reason = n === null ? "connection closed mid-head" : "read timeout";
          const status = n === null ? 400 : 408;
          reportBadRequest(conn, status, reason);
          reply = textReply(status, reason);
          break;
        }
        length += n;
        const head = parseRequestHead(buffer.subarray(0, length), { maxHeadBytes });
        if (head.ok === "incomplete") continue;
        slot.phase = "computing";
        if (head.ok === false) {
          reportBadRequest(conn, head.status, head.reason);
          reply = textReply(head.status, head.reason);
        } else {
          isHead = head.method === "HEAD";
          reply = await route(head);
        }
      }
      slot.phase = "writing";
      if (!await io.write(encodeReply(reply, isHead), writeTimeoutMs)) {
        reportBadRequest(conn, 408, "write timeout");
        return;
      }
      slot.phase = "lingering";
      await io.linger(buffer, LINGER_MS, LINGER_MAX_BYTES);
    } catch (error) {
      // Resets and broken pipes are the client's business; they end this connection only.
      debug("ops listener connection error", { error: String(error), remote: remoteOf(conn) });
    } finally {
      await io.close();
    }
  }

  async function refuse(conn: Deno.Conn): Promise<void> {
    const io = timedConn(conn);
    try {
      const reply = textReply(503, "too many connections");
      if (await io.write(encodeReply(reply, false), writeTimeoutMs)) {
        await io.linger(new Uint8Array(4096), LINGER_MS, LINGER_MAX_BYTES);
      }
    } catch (error) {
      debug("ops listener connection error", { error: String(error), remote: remoteOf(conn) });
    } finally {
      await io.close();
    }
  }

  async function route(head: RequestHead): Promise<Reply> {
    const query = head.target.indexOf("?");
    const path = query < 0 ? head.target : head.target.slice(0, query);
    if (!ROUTES.has(path) && !(status !== undefined && STATUS_ROUTES.has(path))) {
      return textReply(404, "not found");
    }
    if (head.method !== "GET" && head.method !== "HEAD") {
      return { ...textReply(405, "method not allowed"), headers: [["Allow", "GET, HEAD"]] };
    }
    switch (path) {
      case "/metrics":
        return await metricsReply();
      case "/readyz": {
        const report = probe();
        if (report.draining) return textReply(503, "draining");
        return report.ready ? textReply(200, "ready") : textReply(503, "not ready");
      }
      case "/health":
        return healthReply(probe());
      case "/status":
      case "/status.json":
        return statusReply(path === "/status.json");
      default: // /healthz, /livez: answering at all proves the process and event loop turn.
        return textReply(200, "ok");
    }
  }

  async function metricsReply(): Promise<Reply> {
    try {
      const text = await withTimeout(registry.metrics(), writeTimeoutMs);
      if (text === TIMED_OUT) throw new Error("metrics collection timed out");
      return { status: 200, contentType: registry.contentType, body: encoder.encode(text) };
    } catch (error) {
      warn("metrics collection failed", { error: String(error) });
      return textReply(500, "metrics collection failed");
    }
  }

  function probe(): HealthReport & { failed?: true } {
    try {
      const report = health();
      return {
        ready: report.ready === true,
        draining: report.draining === true,
        detail: report.detail ?? {},
      };
    } catch (error) {
      warn("health report failed", { error: String(error) });
      return { ready: false, draining: false, detail: {}, failed: true };
    }
  }

  function statusReply(json: boolean): Reply {
    try {
      const report = status!();
      // The page frames nothing and runs no script: it says so to the browser as well.
      const headers: [string, string][] = [
        ["Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"],
        ["X-Content-Type-Options", "nosniff"],
        ["X-Frame-Options", "DENY"],
      ];
      const body = json
        ? JSON.stringify(report.json, null, 2) + "\n"
        : renderStatusPage(report.page);
      return {
        status: 200,
        contentType: json ? JSON_TYPE : HTML,
        body: encoder.encode(body),
        headers,
      };
    } catch (error) {
      warn("status report failed", { error: String(error) });
      return textReply(500, "status report failed");
    }
  }

  function healthReply(report: HealthReport & { failed?: true }): Reply {
    const status = report.draining ? "draining" : report.ready ? "ok" : "not_ready";
    const core = {
      status,
      ready: report.ready,
      draining: report.draining,
      uptime_seconds: Math.round(performance.now()) / 1000,
    };
    // Detail follows the core fields but may not overwrite them.
    const document = {
      ...core,
      ...report.detail,
      ...core,
      ...(report.failed ? { error: "health report failed" } : {}),
    };
    try {
      return {
        status: status === "ok" ? 200 : 503,
        contentType: JSON_TYPE,
        body: encoder.encode(JSON.stringify(document) + "\n"),
      };
    } catch (error) {
      warn("health detail is not serialisable", { error: String(error) });
      return textReply(500, "health detail is not serialisable");
    }
  }

  /**
   * Makes room for a newcomer by closing a served connection that is not computing its
   * answer; false when every one is.
   */
  function evictOne(): boolean {
    const victim = oldestIn("lingering") ?? oldestReadingOfBusiestSource() ?? oldestIn("writing");
    if (victim === undefined) return false;
    const phase = served.get(victim)?.phase;
    served.delete(victim);
    if (phase === "reading") {
      reportBadRequest(victim, 408, "evicted: request head incomplete while every slot was taken");
    } else if (phase === "writing") {
      reportBadRequest(victim, 408, "evicted: response not taken while every slot was taken");
    } else {
      // Its answer is written: only the courtesy linger is cut short, nothing was rejected.
      debug("ops listener evicted a lingering connection", { remote: remoteOf(victim) });
    }
    // Its pending read fails, and its handler ends (and releases what it holds) on its own.
    closeQuietly(victim);
    return true;
  }

  function oldestIn(phase: Phase): Deno.Conn | undefined {
    for (const [conn, slot] of served) if (slot.phase === phase) return conn;
    return undefined;
  }

  // Per source address, so one address cannot push out another's unfinished request by
  // opening connections faster than that request arrives.
  function oldestReadingOfBusiestSource(): Deno.Conn | undefined {
    const perSource = new Map<string, number>();
    for (const [conn, slot] of served) {
      if (slot.phase !== "reading") continue;
      const source = sourceOf(conn);
      perSource.set(source, (perSource.get(source) ?? 0) + 1);
    }
    const most = Math.max(0, ...perSource.values());
    for (const [conn, slot] of served) {
      if (slot.phase === "reading" && perSource.get(sourceOf(conn)) === most) return conn;
    }
    return undefined;
  }

  function track(
    conn: Deno.Conn,
    set: Map<Deno.Conn, Slot>,
    handle: (conn: Deno.Conn, slot: Slot) => Promise<void>,
  ) {
    const slot: Slot = { phase: "reading" };
    set.set(conn, slot);
    const handler: Promise<void> = handle(conn, slot)
      .catch((error) => debug("ops listener handler failed", { error: String(error) }))
      .finally(() => {
        set.delete(conn);
        handlers.delete(handler);
      });
    handlers.add(handler);
  }

  const accepting = (async () => {
    while (!closing) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (closing || error instanceof Deno.errors.BadResource) return;
        warn("ops listener accept failed", { error: String(error) });
        await delay(ACCEPT_RETRY_MS);
        continue;
      }
      if (closing) {
        closeQuietly(conn);
        continue;
      }
      if (served.size < maxConnections || evictOne()) {
        track(conn, served, serve);
        continue;
      }
      count(503, "too many connections");
      warn("ops listener refused a connection", { maxConnections, remote: remoteOf(conn) });
      // Refusals are bounded too: past twice the cap, connections are dropped without a word.
      if (refused.size < maxConnections) track(conn, refused, refuse);
      else closeQuietly(conn);
    }
  })();

  let closed: Promise<void> | undefined;
  return {
    addr,
    close(): Promise<void> {
      closed ??= (async () => {
        closing = true;
        closeQuietly(listener);
        await accepting;
        if (handlers.size > 0) {
          await withTimeout(Promise.allSettled([...handlers]), closeTimeoutMs);
        }
        for (const conn of [...served.keys(), ...refused.keys()]) closeQuietly(conn);
        await Promise.allSettled([...handlers]);
      })();
      return closed;
    },
  };
}

function textReply(status: number, text: string): Reply {
  return { status, contentType: TEXT, body: encoder.encode(text) };
}

function encodeReply(reply: Reply, headOnly: boolean): Uint8Array {
  const lines = [
    `HTTP/1.1 ${reply.status} ${STATUS_TEXT[reply.status] ?? "Unknown"}`,
    `Content-Type: ${reply.contentType}`,
    `Content-Length: ${reply.body.length}`,
    "Cache-Control: no-store",
    "Connection: close",
    ...(reply.headers ?? []).map(([name, value]) => `${name}: ${value}`),
  ];
  const head = encoder.encode(lines.join("\r\n") + "\r\n\r\n");
  if (headOnly) return head;
  const bytes = new Uint8Array(head.length + reply.body.length);
  bytes.set(head);
  bytes.set(reply.body, head.length);
  return bytes;
}

interface TimedConn {
  /** Reads with a time limit; an unfinished read is resumed by the next call (into its buffer). */
  read(buffer: Uint8Array, timeoutMs: number): Promise<number | null | typeof TIMED_OUT>;
  /** Writes all bytes within the time limit; false when it ran out. */
  write(bytes: Uint8Array, timeoutMs: number): Promise<boolean>;
  /** Half-closes, then discards input until EOF, a time or byte bound, or an error. */
  linger(scratch: Uint8Array, timeoutMs: number, maxBytes: number): Promise<void>;
  /** Closes the connection and waits until no operation on it is pending. */
  close(): Promise<void>;
}

// Deno cannot cancel a read or write except by closing the connection, so timed-out operations
// stay pending until close(), which then waits for them to settle (no leaked ops).
function timedConn(conn: Deno.Conn): TimedConn {
  let pendingRead: Promise<number | null> | undefined;
  const pending = new Set<Promise<unknown>>();
  const watch = <T>(op: Promise<T>): Promise<T> => {
    pending.add(op);
    op.then(() => pending.delete(op), () => pending.delete(op));
    return op;
  };

  async function read(buffer: Uint8Array, timeoutMs: number) {
    pendingRead ??= watch(conn.read(buffer));
    const result = await withTimeout(pendingRead, timeoutMs);
    if (result !== TIMED_OUT) pendingRead = undefined;
    return result;
  }

  return {
    read,
    async write(bytes, timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      for (let offset = 0; offset < bytes.length;) {
        const n = await withTimeout(
          watch(conn.write(bytes.subarray(offset))),
          deadline - performance.now(),
        );
        if (n === TIMED_OUT) return false;
        offset += n;
      }
      return true;
    },
    async linger(scratch, timeoutMs, maxBytes) {
      try {
        await conn.closeWrite();
        const deadline = performance.now() + timeoutMs;
        for (let total = 0; total < maxBytes;) {
          const n = await read(scratch, deadline - performance.now());
          if (n === null || n === TIMED_OUT) return;
          total += n;
        }
      } catch {
        // The peer already went away: nothing left to protect.
      }
    },
    async close() {
      closeQuietly(conn);
      await Promise.allSettled([...pending]);
    },
  };
}

function withTimeout<T>(op: Promise<T>, timeoutMs: number): Promise<T | typeof TIMED_OUT> {
  if (timeoutMs <= 0) return Promise.resolve(TIMED_OUT);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), timeoutMs);
  });
  return Promise.race([op, timeout]).finally(() => clearTimeout(timer));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}

function sourceOf(conn: Deno.Conn): string {
  return (conn.remoteAddr as Deno.NetAddr).hostname;
}

function remoteOf(conn: Deno.Conn): string {
  const remote = conn.remoteAddr as Deno.NetAddr;
  return `${remote.hostname}:${remote.port}`;
}

function requirePositiveInteger(name: string, value: number, min = 1): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RangeError(
      `Cannot start ops listener as '${name}' must be an integer >= ${min}: current value is ${value}`,
    );
  }
}
