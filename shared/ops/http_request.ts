/**
 * A minimal, bounded HTTP/1.1 request-head parser (RFC 9112 §2-§5) for the ops listener.
 *
 * It parses only the request line and header fields, is strict on purpose (a scraper or probe
 * never needs leniency), and never throws on any input bytes, so it can be fuzzed directly.
 *
 * @module
 */

/** Default upper bound of a request head (request line + header fields + final CRLF). */
export const DEFAULT_MAX_HEAD_BYTES = 8192;
/** Default upper bound of the number of header field lines. */
export const DEFAULT_MAX_HEADER_COUNT = 100;

/** A complete, valid request head. */
export interface RequestHead {
  ok: true;
  /** Method token, case-sensitive as sent (`GET`, `HEAD`, ...). */
  method: string;
  /** Origin-form request target: an absolute path with an optional query (`/metrics?x=1`). */
  target: string;
  version: "HTTP/1.0" | "HTTP/1.1";
  /** Field names lower-cased; repeated fields joined with ", " (RFC 9110 §5.3). */
  headers: Map<string, string>;
  /** Bytes consumed by the head, including the terminating CRLFCRLF. */
  headLength: number;
}

/** A request head that must be rejected with `status`. */
export interface RequestHeadError {
  ok: false;
  /** 400 malformed, 431 head too large, 505 unsupported HTTP version. */
  status: 400 | 431 | 505;
  /** Short human-readable cause, safe to log (never echoes request bytes). */
  reason: string;
}

/** Not enough bytes yet, and nothing seen so far is invalid. */
export interface RequestHeadIncomplete {
  ok: "incomplete";
}

/** Result of {@linkcode parseRequestHead}. */
export type ParseRequestHeadResult = RequestHead | RequestHeadError | RequestHeadIncomplete;

/** Options for {@linkcode parseRequestHead}. */
export interface ParseRequestHeadOptions {
  /**
   * Largest accepted head in bytes; a head not terminated within it is rejected with 431.
   * @default {8192}
   */
  maxHeadBytes?: number;
  /**
   * Largest accepted number of header field lines; more are rejected with 431.
   * @default {100}
   */
  maxHeaderCount?: number;
}

const NUL = 0x00;
const HTAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const DEL = 0x7f;

// tchar (RFC 9110 §5.6.2), origin-form (RFC 9112 §3.2.1) built from pchar and "/" "?".
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const TOKEN_PREFIX = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]*$/;
const ORIGIN_FORM = /^\/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$/;
const HTTP_VERSION = /^HTTP\/[0-9]\.[0-9]$/;

/**
 * Parses an HTTP/1.x request head from the start of `bytes`.
 *
 * Returns `{ ok: "incomplete" }` while more bytes could still make a valid head, so a caller
 * reads more and parses again; bytes after `headLength` (a body) are left to the caller.
 * Rejects: bare CR or LF, NUL, obs-fold, a request line that is not
 * `token SP origin-form SP HTTP/1.0|HTTP/1.1`, invalid field names or values, a repeated Host,
 * an HTTP/1.1 request without Host (400); a head larger than `maxHeadBytes` or with more than
 * `maxHeaderCount` fields (431); any other well-formed HTTP version (505).
 *
 * Never throws for any `bytes`; throws `RangeError` only for invalid options.
 *
 * @example Usage
 * ```ts
 * import { parseRequestHead } from "./http_request.ts";
 * import assert from "node:assert/strict";
 *
 * const bytes = new TextEncoder().encode("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
 * const head = parseRequestHead(bytes);
 * assert(head.ok === true);
 * assert.equal(head.target, "/metrics");
 * assert.equal(head.headers.get("host"), "a");
 * assert.equal(head.headLength, bytes.length);
 * ```
 *
 * @param bytes The bytes received so far on a connection.
 * @param options Size limits.
 * @returns The parsed head, a rejection with its status, or "incomplete".
 */
export function parseRequestHead(
  bytes: Uint8Array,
  options: ParseRequestHeadOptions = {},
): ParseRequestHeadResult {
  const {
    maxHeadBytes = DEFAULT_MAX_HEAD_BYTES,
    maxHeaderCount = DEFAULT_MAX_HEADER_COUNT,
  } = options;
  if (!Number.isSafeInteger(maxHeadBytes) || maxHeadBytes < 16) {
    throw new RangeError(
      `Cannot parse request head as 'maxHeadBytes' must be an integer >= 16: current value is ${maxHeadBytes}`,
    );
  }
  if (!Number.isSafeInteger(maxHeaderCount) || maxHeaderCount < 1) {
    throw new RangeError(
      `Cannot parse request head as 'maxHeaderCount' must be a positive integer: current value is ${maxHeaderCount}`,
    );
  }

  // One pass over at most maxHeadBytes: find line ends and the CRLFCRLF terminator, and reject
  // bytes no part of a head may contain as early as they arrive.
  const limit = Math.min(bytes.length, maxHeadBytes);
  let requestLineEnd = -1;
  let headLength = -1;
  for (let i = 0; i < limit; i++) {
    const byte = bytes[i];
    if (byte === NUL) return reject(400, "NUL byte in request head");
    if (byte === CR) {
      if (i + 1 < bytes.length && bytes[i + 1] !== LF) return reject(400, "bare CR");
    } else if (byte === LF) {
      if (i === 0 || bytes[i - 1] !== CR) return reject(400, "bare LF");
      if (requestLineEnd < 0) requestLineEnd = i - 1;
      else if (bytes[i - 2] === LF) {
        headLength = i + 1;
        break;
      }
    }
  }

  if (requestLineEnd < 0) {
    // Reject a garbage request line before it is complete, so junk fails fast.
    const end = limit > 0 && bytes[limit - 1] === CR ? limit - 1 : limit;
    const prefixError = checkRequestLinePrefix(latin1(bytes, 0, end));
    if (prefixError) return prefixError;
  } else {
    const lineError = checkRequestLine(latin1(bytes, 0, requestLineEnd));
    if (lineError) return lineError;
  }
  if (headLength < 0) {
    return bytes.length >= maxHeadBytes
      ? reject(431, `request head exceeds ${maxHeadBytes} bytes`)
      : { ok: "incomplete" };
  }

  const [method, target, version] = latin1(bytes, 0, requestLineEnd).split(" ");
  const headers = new Map<string, string>();
  let count = 0;
  // Field lines sit between the request line's CRLF and the final empty line's CRLF.
  for (let start = requestLineEnd + 2; start < headLength - 2;) {
    const end = indexOfCrlf(bytes, start);
    if (++count > maxHeaderCount) return reject(431, `more than ${maxHeaderCount} header fields`);
    const fieldError = addField(bytes, start, end, headers);
    if (fieldError) return fieldError;
    start = end + 2;
  }
  if (version === "HTTP/1.1" && !headers.has("host")) {
    // RFC 9112 §3.2: a server MUST reject an HTTP/1.1 request without Host.
    return reject(400, "missing Host header");
  }
  return {
    ok: true,
    method,
    target,
    version: version as "HTTP/1.0" | "HTTP/1.1",
    headers,
    headLength,
  };
}

function reject(status: 400 | 431 | 505, reason: string): RequestHeadError {
  return { ok: false, status, reason };
}

function checkRequestLine(line: string): RequestHeadError | undefined {
  const parts = line.split(" ");
  if (parts.length !== 3) return reject(400, "malformed request line");
  const [method, target, version] = parts;
  if (!TOKEN.test(method)) return reject(400, "invalid method");
  if (!ORIGIN_FORM.test(target)) return reject(400, "invalid request target");
  if (version === "HTTP/1.0" || version === "HTTP/1.1") return undefined;
  if (HTTP_VERSION.test(version)) return reject(505, "unsupported HTTP version");
  return reject(400, "invalid HTTP version");
}

function checkRequestLinePrefix(prefix: string): RequestHeadError | undefined {
  const firstSpace = prefix.indexOf(" ");
  const method = firstSpace < 0 ? prefix : prefix.slice(0, firstSpace);
  if (!TOKEN_PREFIX.test(method)) return reject(400, "invalid method");
  if (firstSpace === 0) return reject(400, "malformed request line");
  const rest = firstSpace < 0 ? "" : prefix.slice(firstSpace + 1);
  if (rest.length > 0 && rest[0] !== "/") return reject(400, "invalid request target");
  for (let i = 0; i < rest.length; i++) {
    const code = rest.charCodeAt(i);
    if (code < SP || code >= DEL) return reject(400, "invalid byte in request line");
  }
  return undefined;
}

function addField(
  bytes: Uint8Array,
  start: number,
  end: number,
  headers: Map<string, string>,
): RequestHeadError | undefined {
  if (bytes[start] === SP || bytes[start] === HTAB) {
    return reject(400, "obsolete line folding");
  }
  let colon = -1;
  for (let i = start; i < end; i++) {
    if (bytes[i] === 0x3a) {
      colon = i;
      break;
    }
  }
  if (colon < 0) return reject(400, "header field without colon");
  const name = latin1(bytes, start, colon);
  if (!TOKEN.test(name)) return reject(400, "invalid header field name");
  let valueStart = colon + 1;
  let valueEnd = end;
  while (valueStart < valueEnd && isOws(bytes[valueStart])) valueStart++;
  while (valueEnd > valueStart && isOws(bytes[valueEnd - 1])) valueEnd--;
  for (let i = valueStart; i < valueEnd; i++) {
    const byte = bytes[i];
    // field-vchar / SP / HTAB / obs-text; every other control byte is rejected.
    if ((byte < SP && byte !== HTAB) || byte === DEL) {
      return reject(400, "invalid header field value");
    }
  }
  const key = name.toLowerCase();
  const value = latin1(bytes, valueStart, valueEnd);
  const previous = headers.get(key);
  if (previous === undefined) headers.set(key, value);
  else if (key === "host") return reject(400, "repeated Host header");
  else headers.set(key, `${previous}, ${value}`);
  return undefined;
}

function isOws(byte: number): boolean {
  return byte === SP || byte === HTAB;
}

function indexOfCrlf(bytes: Uint8Array, from: number): number {
  for (let i = from; i + 1 < bytes.length; i++) {
    if (bytes[i] === CR && bytes[i + 1] === LF) return i;
  }
  return bytes.length;
}

// Latin-1 keeps one code unit per byte, so obs-text survives and indexes stay aligned.
function latin1(bytes: Uint8Array, start: number, end: number): string {
  let text = "";
  for (let i = start; i < end; i += 4096) {
    text += String.fromCharCode(...bytes.subarray(i, Math.min(end, i + 4096)));
  }
  return text;
}
