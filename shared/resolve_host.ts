/**
 * Resolves configured host names to the IP literals UDP sockets and quiche need.
 *
 * @module
 */

/**
 * Returns `host` itself when it is an IP literal, 127.0.0.1 for `localhost`, else the
 * first A (then AAAA) record. DNS lookups need `--allow-net` for the resolver.
 *
 * @example
 * ```ts
 * import { resolveHost } from "./resolve_host.ts";
 * if (await resolveHost("10.0.0.1") !== "10.0.0.1") throw new Error();
 * ```
 */
export async function resolveHost(host: string): Promise<string> {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(":")) return host;
  if (host === "localhost") return "127.0.0.1";
  for (const type of ["A", "AAAA"] as const) {
    const records = await Deno.resolveDns(host, type).catch(() => [] as string[]);
    if (records.length > 0) return records[0];
  }
  throw new Error(`cannot resolve ${host}`);
}
