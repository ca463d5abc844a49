/**
 * Resolves configured host names to the IP literals UDP sockets and quiche need.
 *
 * Lookups go through the system resolver (`node:dns` `lookup`, i.e. getaddrinfo), so
 * `/etc/hosts` and search domains apply (a Kubernetes short service name works). Under
 * Deno's sandbox a lookup needs `--allow-net=<name>` (the bare name, any port).
 *
 * @module
 */
import { lookup } from "node:dns/promises";

/** True for an IPv4 or IPv6 literal (no brackets). */
export function isIpLiteral(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(":");
}

/**
 * Every address `host` resolves to (IPv4 first), or `[host]` for an IP literal.
 *
 * @example
 * ```ts
 * import { resolveAll } from "./resolve_host.ts";
 * const addresses = await resolveAll("10.0.0.1");
 * if (addresses.join() !== "10.0.0.1") throw new Error();
 * ```
 */
export async function resolveAll(host: string): Promise<string[]> {
  if (isIpLiteral(host)) return [host];
  let records: { address: string; family: number }[];
  try {
    records = await lookup(host, { all: true });
  } catch (error) {
    throw new Error(`cannot resolve ${host}: ${(error as Error).message}`);
  }
  const addresses = [
    ...new Set(
      records.sort((a, b) => a.family - b.family).map((record) => record.address),
    ),
  ];
  if (addresses.length === 0) throw new Error(`cannot resolve ${host}: no addresses`);
  return addresses;
}

/**
 * The first address `host` resolves to (IPv4 preferred), or `host` for an IP literal.
 *
 * @example
 * ```ts
 * import { resolveHost } from "./resolve_host.ts";
 * if (await resolveHost("10.0.0.1") !== "10.0.0.1") throw new Error();
 * ```
 */
export async function resolveHost(host: string): Promise<string> {
  return (await resolveAll(host))[0];
}
