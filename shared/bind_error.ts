/**
 * Binding a configured address failed (in use, not on this host, not permitted): the error
 * names the address, so start-up can say which config key it came from and exit cleanly
 * instead of dying on an uncaught `AddrInUse` with a stack trace.
 *
 * @module
 */

/** Exit status when a configured address cannot be bound (see docs/OPERATIONS.md, exit codes). */
export const BIND_FAILED_EXIT = 3;

/** A bind of `host:port` failed. */
export class BindError extends Error {
  /** The address that could not be bound. */
  readonly host: string;
  /** Its port (0: an ephemeral one was asked for). */
  readonly port: number;

  /**
   * Constructs a new instance.
   *
   * @param host The address.
   * @param port The port.
   * @param cause The runtime's error.
   */
  constructor(host: string, port: number, cause: unknown) {
    const shown = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    const reason = cause instanceof Deno.errors.AddrInUse
      ? "address already in use"
      : cause instanceof Error
      ? cause.message
      : String(cause);
    super(`cannot bind ${shown}: ${reason}`, { cause });
    this.name = "BindError";
    this.host = host;
    this.port = port;
  }
}

/**
 * Runs `bind` (a `Deno.listen` or `Deno.listenDatagram`) and turns its failure into a
 * {@linkcode BindError} naming `host:port`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { bindAddress, BindError } from "./bind_error.ts";
 *
 * const first = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = first.addr as Deno.NetAddr;
 * assert.throws(
 *   () => bindAddress("127.0.0.1", port, () => Deno.listen({ hostname: "127.0.0.1", port })),
 *   BindError,
 * );
 * first.close();
 * ```
 */
export function bindAddress<T>(host: string, port: number, bind: () => T): T {
  try {
    return bind();
  } catch (error) {
    if (
      error instanceof Deno.errors.AddrInUse || error instanceof Deno.errors.AddrNotAvailable ||
      error instanceof Deno.errors.PermissionDenied
    ) throw new BindError(host, port, error);
    throw error;
  }
}

/**
 * The dotted config key whose value is the address `host:port` (a `{host, port}` object or a
 * URL-like `{protocol, host, port}`), for the error line; null when none is.
 */
export function addressKey(config: unknown, host: string, port: number, path = ""): string | null {
  if (config === null || typeof config !== "object") return null;
  const record = config as Record<string, unknown>;
  if (record.host === host && record.port === port) return path || null;
  for (const [key, value] of Object.entries(record)) {
    const name = Array.isArray(config) ? `${path}[${key}]` : path === "" ? key : `${path}.${key}`;
    const found = addressKey(value, host, port, name);
    if (found !== null) return found;
  }
  return null;
}
