/**
 * The one free-port helper of the test suite.
 *
 * @module
 */

/**
 * A loopback port that was free a moment ago: bound on port 0, read, released. Another
 * process may take it before the test binds it; tests use it only where a component must be
 * told a port up front (a dead relay address, a backend that comes up later).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { freePort } from "./ports.ts";
 *
 * const port = freePort("udp");
 * assert.ok(port > 0 && port < 65536);
 * ```
 *
 * @param transport `tcp` (default) or `udp`.
 * @param hostname The loopback address to probe.
 * @returns The port.
 */
export function freePort(transport: "tcp" | "udp" = "tcp", hostname = "127.0.0.1"): number {
  const probe = transport === "udp"
    ? Deno.listenDatagram({ transport: "udp", hostname, port: 0 })
    : Deno.listen({ hostname, port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  return port;
}
