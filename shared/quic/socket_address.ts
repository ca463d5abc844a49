/**
 * `struct sockaddr_in`/`sockaddr_in6` to and from the `Deno.NetAddr` form the rest of the
 * code uses, for the batched socket. Hostnames come out exactly as `Deno.listenDatagram`
 * reports them (`::ffff:a.b.c.d` for IPv4 on an IPv6 socket), so both socket kinds agree.
 *
 * @module
 */
import ipaddr from "ipaddr.js";
import { AF_INET, AF_INET6 } from "./libc.ts";

/**
 * Writes the address of `hostname:port` into `out` (at least 28 bytes) for a socket of
 * `family`: an IPv4 destination on an IPv6 socket becomes its mapped form.
 * Returns the address length, or 0 when `hostname` is no IP literal of a reachable family.
 */
export function encodeSockaddr(
  hostname: string,
  port: number,
  family: number,
  out: Uint8Array,
): number {
  let address: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    address = ipaddr.parse(hostname);
  } catch {
    return 0;
  }
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  out.fill(0, 0, 28);
  if (family === AF_INET) {
    if (address.kind() === "ipv6") {
      const v6 = address as ipaddr.IPv6;
      if (!v6.isIPv4MappedAddress()) return 0;
      address = v6.toIPv4Address();
    }
    view.setUint16(0, AF_INET, true);
    view.setUint16(2, port);
    out.set(address.toByteArray(), 4);
    return 16;
  }
  const v6 = address.kind() === "ipv4"
    ? (address as ipaddr.IPv4).toIPv4MappedAddress()
    : address as ipaddr.IPv6;
  view.setUint16(0, AF_INET6, true);
  view.setUint16(2, port);
  out.set(v6.toByteArray(), 8);
  return 28;
}

/** Decoded sender addresses are cached up to this many (then the cache starts over). */
const CACHE_LIMIT = 16_384;

/**
 * A decoder of received `sockaddr`s into `Deno.NetAddr`s that allocates only for a sender
 * it has not seen lately: the objects are shared, so callers must not change them.
 */
export function createSockaddrDecoder(): (bytes: Uint8Array, view: DataView) => Deno.NetAddr {
  const v4 = new Map<number, Deno.NetAddr>();
  const v6 = new Map<string, Deno.NetAddr>();
  return (bytes, view) => {
    const o = bytes.byteOffset;
    const port = view.getUint16(o + 2);
    if (view.getUint16(o, true) === AF_INET) {
      const key = view.getUint32(o + 4) * 65_536 + port;
      let addr = v4.get(key);
      if (addr === undefined) {
        if (v4.size >= CACHE_LIMIT) v4.clear();
        const hostname = `${bytes[4]}.${bytes[5]}.${bytes[6]}.${bytes[7]}`;
        addr = { transport: "udp", hostname, port };
        v4.set(key, addr);
      }
      return addr;
    }
    const ip = bytes.subarray(8, 24);
    let key = String(port);
    for (let i = 0; i < 16; i++) key += `.${ip[i]}`;
    let addr = v6.get(key);
    if (addr === undefined) {
      if (v6.size >= CACHE_LIMIT) v6.clear();
      const parsed = ipaddr.fromByteArray([...ip]) as ipaddr.IPv6;
      const hostname = parsed.isIPv4MappedAddress()
        ? `::ffff:${parsed.toIPv4Address().toString()}`
        : parsed.toRFC5952String();
      addr = { transport: "udp", hostname, port };
      v6.set(key, addr);
    }
    return addr;
  };
}
