/**
 * The local address a flow's backend socket binds: the one the kernel would send from to
 * reach the backend, never the wildcard when that can be told. A socket bound to 0.0.0.0
 * takes datagrams addressed to any of the host's addresses, so a packet spoofing the
 * backend's `ip:port` that arrives on another interface would pass source validation.
 *
 * Deno's sandbox cannot read the routing table (`/proc/net/route` needs all access) and
 * `node:dgram`'s `connect()` does not connect the kernel socket, so the choice is made from
 * the interface list (`--allow-sys=networkInterfaces`): loopback, one of our own addresses,
 * an on-link subnet (longest prefix), or the only interface that could carry the packet.
 *
 * @module
 */

/** How {@linkcode backendBindAddress} chose. */
export type BindReason =
  | "loopback"
  | "local"
  | "on_link"
  | "only_interface"
  | "ambiguous"
  | "interfaces_unknown";

/** The bind address for one backend and why. */
export interface BindChoice {
  /** IP literal to bind (`0.0.0.0` / `::` only when `reason` is `ambiguous` or `interfaces_unknown`). */
  address: string;
  reason: BindReason;
}

/** The parts of `Deno.NetworkInterfaceInfo` the choice reads. */
export type InterfaceInfo = Pick<Deno.NetworkInterfaceInfo, "family" | "name" | "address" | "cidr">;

/**
 * Chooses the address to bind for sending to `backend` (an IP literal).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { backendBindAddress } from "./bind_address.ts";
 *
 * const eth0 = { family: "IPv4", name: "eth0", address: "10.0.0.2", cidr: "10.0.0.2/24" } as const;
 * assert.equal(backendBindAddress("127.0.0.1", () => []).address, "127.0.0.1");
 * assert.deepEqual(backendBindAddress("10.0.0.5", () => [eth0]), {
 *   address: "10.0.0.2",
 *   reason: "on_link",
 * });
 * ```
 *
 * @param backend The backend's IP address.
 * @param interfaces The host's interface addresses; only read for non-loopback backends.
 * @returns The address and how it was chosen.
 */
export function backendBindAddress(
  backend: string,
  interfaces: () => InterfaceInfo[] = () => Deno.networkInterfaces(),
): BindChoice {
  const v6 = backend.includes(":");
  const target = parseIp(backend);
  if (v6 ? target === 1n : target >> 24n === 127n) {
    return { address: v6 ? "::1" : "127.0.0.1", reason: "loopback" };
  }
  const family = v6 ? "IPv6" : "IPv4";
  const bits = v6 ? 128 : 32;
  const own = interfaces().filter((i) => i.family === family);
  if (own.some((i) => parseIp(i.address) === target)) return { address: backend, reason: "local" };
  let best: { address: string; prefix: number } | undefined;
  for (const entry of own) {
    const prefix = Number(entry.cidr?.split("/")[1] ?? bits);
    const shift = BigInt(bits - prefix);
    if (parseIp(entry.address) >> shift !== target >> shift) continue;
    if (best === undefined || prefix > best.prefix) best = { address: entry.address, prefix };
  }
  if (best !== undefined) return { address: best.address, reason: "on_link" };
  // Off-link: a gateway carries it. With one candidate interface the kernel can only pick
  // its address; with several only the routing table knows.
  const candidates = own.filter((i) => !isLoopbackOrLinkLocal(parseIp(i.address), v6));
  if (new Set(candidates.map((i) => i.name)).size === 1) {
    return { address: candidates[0].address, reason: "only_interface" };
  }
  return { address: v6 ? "::" : "0.0.0.0", reason: "ambiguous" };
}

function isLoopbackOrLinkLocal(ip: bigint, v6: boolean): boolean {
  if (v6) return ip === 1n || ip >> 118n === 0x3fan; // ::1, fe80::/10
  return ip >> 24n === 127n || ip >> 16n === 0xa9fen; // 127/8, 169.254/16
}

/** An IPv4 or IPv6 literal as a number (a zone suffix `%eth0` is ignored). */
function parseIp(text: string): bigint {
  const ip = text.split("%")[0];
  if (!ip.includes(":")) {
    return ip.split(".").reduce((n, octet) => (n << 8n) | BigInt(Number(octet)), 0n);
  }
  let groups = ip.split(":");
  // An embedded IPv4 tail (::ffff:10.0.0.1) is two groups.
  const tail = groups[groups.length - 1];
  if (tail.includes(".")) {
    const v4 = parseIp(tail);
    groups.splice(-1, 1, (v4 >> 16n).toString(16), (v4 & 0xffffn).toString(16));
  }
  const gap = groups.indexOf("");
  if (gap !== -1) {
    const filled = groups.filter((g) => g !== "");
    groups = [
      ...groups.slice(0, gap).filter((g) => g !== ""),
      ...Array(8 - filled.length).fill("0"),
      ...groups.slice(gap).filter((g) => g !== ""),
    ];
  }
  return groups.reduce((n, group) => (n << 16n) | BigInt(parseInt(group, 16)), 0n);
}
