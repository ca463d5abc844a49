/**
 * Network addresses in config: `host:port`, `[v6]:port`, `udp://host:port`, `tcp://host:port`.
 *
 * @module
 */
import { z } from "zod";

/** A host (name, IPv4 or IPv6 without brackets) and a port (0 = ephemeral). */
export interface HostPort {
  /** Host name or IP literal; IPv6 is given without brackets. */
  host: string;
  /** Port number, 0..65535. */
  port: number;
}

/** A backend or listen address together with its transport protocol. */
export interface ServiceUrl extends HostPort {
  /** Transport protocol. */
  protocol: "udp" | "tcp";
}

const hostPortHint = "expected host:port, e.g. 127.0.0.1:4433 or [::1]:4433";
const serviceUrlHint = "expected udp://host:port or tcp://host:port, e.g. udp://127.0.0.1:53";
const hostName =
  /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
const ipv4Like = /^[0-9.]+$/;
const ipv6Chars = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/;

/** Returns the parsed address, or the message explaining why `text` is not one. */
function hostPortOrReason(text: string): HostPort | string {
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(text);
  const plain = /^([^:[\]]*):([^:]*)$/.exec(text);
  const match = bracketed ?? plain;
  if (!match) {
    return text.includes(":") && !text.startsWith("[") && text.split(":").length > 2
      ? `${hostPortHint} (put IPv6 addresses in brackets): got "${text}"`
      : `${hostPortHint}: got "${text}"`;
  }
  const [, host, portText] = match;
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535) {
    return `port must be an integer 0..65535 in "${text}"`;
  }
  if (bracketed) {
    if (!host.includes(":") || !ipv6Chars.test(host)) {
      return `invalid IPv6 address "${host}" in "${text}"`;
    }
  } else if (ipv4Like.test(host)) {
    const octets = host.split(".");
    if (octets.length !== 4 || octets.some((o) => o === "" || Number(o) > 255)) {
      return `invalid IPv4 address "${host}" in "${text}"`;
    }
  } else if (!hostName.test(host)) {
    return `invalid host name "${host}" in "${text}"`;
  }
  return { host, port: Number(portText) };
}

function serviceUrlOrReason(text: string): ServiceUrl | string {
  const match = /^(udp|tcp):\/\/(.*)$/.exec(text);
  if (!match) return `${serviceUrlHint}: got "${text}"`;
  const address = hostPortOrReason(match[2]);
  if (typeof address === "string") return `${address} (in service URL "${text}")`;
  return { protocol: match[1] as "udp" | "tcp", ...address };
}

/**
 * Parses `host:port`, `[ipv6]:port`; the host is returned without brackets.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseHostPort } from "./address.ts";
 *
 * assert.deepEqual(parseHostPort("[::1]:4433"), { host: "::1", port: 4433 });
 * assert.deepEqual(parseHostPort("localhost:0"), { host: "localhost", port: 0 });
 * ```
 *
 * @param text The address text.
 * @returns The host and port.
 * @throws {TypeError} If `text` is not a valid address; the message says why.
 */
export function parseHostPort(text: string): HostPort {
  const result = hostPortOrReason(text);
  if (typeof result === "string") throw new TypeError(result);
  return result;
}

/**
 * Formats an address as `host:port`, bracketing IPv6 hosts.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatHostPort } from "./address.ts";
 *
 * assert.equal(formatHostPort({ host: "::1", port: 4433 }), "[::1]:4433");
 * assert.equal(formatHostPort({ host: "127.0.0.1", port: 0 }), "127.0.0.1:0");
 * ```
 *
 * @param address The address.
 * @returns Its text form, which {@linkcode parseHostPort} reads back.
 */
export function formatHostPort(address: HostPort): string {
  const { host, port } = address;
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Parses `udp://host:port` or `tcp://host:port`.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseServiceUrl } from "./address.ts";
 *
 * assert.deepEqual(parseServiceUrl("udp://[::1]:53"), { protocol: "udp", host: "::1", port: 53 });
 * ```
 *
 * @param text The URL text.
 * @returns The protocol, host and port.
 * @throws {TypeError} If `text` is not a valid service URL; the message says why.
 */
export function parseServiceUrl(text: string): ServiceUrl {
  const result = serviceUrlOrReason(text);
  if (typeof result === "string") throw new TypeError(result);
  return result;
}

/** Builds a schema: a string parsed by `parse`, whose failure message becomes the zod issue. */
function parsedString<T>(parse: (text: string) => T | string, hint: string) {
  return z.string({ error: hint }).transform((text, ctx): T => {
    const result = parse(text);
    if (typeof result === "string") {
      ctx.addIssue({ code: "custom", message: result });
      return z.NEVER;
    }
    return result;
  });
}

/** Zod schema: a `host:port` string, parsed to {@linkcode HostPort}. */
export const hostPortSchema: z.ZodType<HostPort, string> = parsedString(
  hostPortOrReason,
  hostPortHint,
);

/** Zod schema: a `udp://host:port` or `tcp://host:port` string, parsed to {@linkcode ServiceUrl}. */
export const serviceUrlSchema: z.ZodType<ServiceUrl, string> = parsedString(
  serviceUrlOrReason,
  serviceUrlHint,
);

/** Zod schema: a metrics listener address, `host:port`, or `"off"` (parsed to `null`). */
export const metricsAddressSchema: z.ZodType<HostPort | null, string> = parsedString(
  (text) => text === "off" ? null : hostPortOrReason(text),
  `${hostPortHint}, or "off"`,
);
