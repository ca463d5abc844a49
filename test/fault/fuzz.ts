/**
 * A seeded fuzz harness for every decoder that reads bytes from a peer or an operator: the
 * control-frame decoder, the DATAGRAM/fragment parser with the reassembler, the TCP stream
 * open header, the TCP stream's chunk framing, the ops listener's HTTP request parser and the
 * config loader.
 *
 * Inputs are valid samples mutated byte-wise and structure-wise, plus plain random bytes.
 * Every case ends in exactly one counted outcome (accepted, or rejected with the decoder's
 * own reason); anything else — an exception of an unexpected kind, a broken memory bound —
 * is a failure reported with the seed and case index, so it can be replayed.
 *
 * `test/fault/fuzz_test.ts` runs 10,000 cases per target; `deno task fuzz` runs longer.
 *
 * @module
 */
import type { z } from "zod";
import { ConfigError, loadConfig } from "../../shared/config/load.ts";
import { agentConfigSchema } from "../../shared/config/agent.ts";
import { connectorConfigSchema } from "../../shared/config/connector.ts";
import { relayConfigSchema } from "../../shared/config/relay.ts";
import { parseRequestHead } from "../../shared/ops/http_request.ts";
import {
  type ControlMessage,
  createControlDecoder,
  encodeControl,
  ProtocolError,
} from "../../shared/protocol/control.ts";
import { encodeFragments, encodeWhole, parseDatagram } from "../../shared/protocol/datagram.ts";
import { createReassembler } from "../../shared/protocol/reassembly.ts";
import {
  CHUNK_HEADER_BYTES,
  ChunkFramingError,
  createChunkDecoder,
  decodeChunkStream,
  type DecodedChunks,
  encodeChunk,
  END_CHUNK,
  MAX_CHUNK_PAYLOAD,
} from "../../shared/protocol/stream_chunks.ts";
import {
  createStreamHeaderDecoder,
  encodeStreamHeader,
  MAX_STREAM_HEADER_BYTES,
} from "../../shared/protocol/stream_header.ts";

/** A deterministic random source (mulberry32). */
export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Integer in [0, n). */
  int(n: number): number;
  /** One element of `items`. */
  pick<T>(items: readonly T[]): T;
  /** `n` random bytes. */
  bytes(n: number): Uint8Array;
}

/** Creates a seeded random source; the same seed gives the same sequence. */
export function createRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: (items) => items[int(items.length)],
    bytes(n) {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = int(256);
      return out;
    },
  };
}

const interestingBytes = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x22, 0x5c, 0x7b, 0x7d, 0x0a, 0x0d];

/** One byte-level mutation of `input` (a new array). */
export function mutate(input: Uint8Array, random: Random, corpus: Uint8Array[]): Uint8Array {
  const out = Array.from(input);
  const at = () => random.int(out.length + 1);
  switch (random.int(9)) {
    case 0: // flip bits
      for (let i = 0, n = 1 + random.int(4); i < n && out.length > 0; i++) {
        out[random.int(out.length)] ^= 1 << random.int(8);
      }
      break;
    case 1: // an interesting byte
      if (out.length > 0) out[random.int(out.length)] = random.pick(interestingBytes);
      break;
    case 2: // insert random bytes
      out.splice(at(), 0, ...random.bytes(1 + random.int(16)));
      break;
    case 3: // delete a range
      out.splice(at(), 1 + random.int(16));
      break;
    case 4: // duplicate a range
      {
        const start = at();
        out.splice(at(), 0, ...out.slice(start, start + 1 + random.int(64)));
      }
      break;
    case 5: // truncate
      out.length = random.int(out.length + 1);
      break;
    case 6: // splice with another sample
      {
        const other = random.pick(corpus);
        out.splice(at(), random.int(8), ...other.subarray(random.int(other.length + 1)));
      }
      break;
    case 7: // overwrite a big-endian length-like word
      if (out.length >= 4) {
        const i = random.int(out.length - 3);
        const value = random.pick([0, 1, 0xff, 0xffff, 0x10000, 0x7fffffff, 0xffffffff]);
        out[i] = value >>> 24;
        out[i + 1] = (value >>> 16) & 0xff;
        out[i + 2] = (value >>> 8) & 0xff;
        out[i + 3] = value & 0xff;
      }
      break;
    default: // several at once
      return mutate(mutate(input, random, corpus), random, corpus);
  }
  return new Uint8Array(out);
}

const enc = new TextEncoder();

/** JSON values that stress validators: wrong types, extremes, deep nesting, long text. */
function hostileJson(random: Random, depth = 0): unknown {
  switch (random.int(depth > 3 ? 8 : 10)) {
    case 0:
      return random.pick([-1, 0, 1.5, 2 ** 53, -(2 ** 63), 1e308, Number.MAX_SAFE_INTEGER]);
    case 1:
      return random.pick([
        "",
        "x",
        "\u0000",
        "\ud800",
        "../../etc/passwd",
        "env:HOME",
        "é".repeat(300),
      ]);
    case 2:
      return "a".repeat(random.int(5000));
    case 3:
      return null;
    case 4:
      return random.next() < 0.5;
    case 5:
      return random.pick(["udp://127.0.0.1:7", "tcp://[::1]:80", "1.2.3.4:99999", "[::1]:1"]);
    case 6:
      return "__proto__";
    case 7:
      return random.pick(["hello", "open", "ping", "register", "teleport"]);
    case 8:
      return Array.from({ length: random.int(4) }, () => hostileJson(random, depth + 1));
    default:
      return Object.fromEntries(
        Array.from({ length: random.int(4) }, () => [
          random.pick(["type", "v", "role", "id", "flow", "service", "__proto__", "constructor"]),
          hostileJson(random, depth + 1),
        ]),
      );
  }
}

/** Replaces one value somewhere in a JSON object with a hostile one (structure-aware). */
export function mutateJson(value: unknown, random: Random): unknown {
  const copy = structuredClone(value) as Record<string, unknown>;
  let node: Record<string, unknown> = copy;
  for (let depth = 0; depth < 4; depth++) {
    const keys = Object.keys(node);
    if (keys.length === 0) break;
    const key = random.pick(keys);
    const child = node[key];
    if (child !== null && typeof child === "object" && random.next() < 0.5) {
      node = child as Record<string, unknown>;
      continue;
    }
    if (random.next() < 0.2) delete node[key];
    else node[key] = hostileJson(random);
    return copy;
  }
  node[random.pick(["extra", "type", "v"])] = hostileJson(random);
  return copy;
}

/** JSON text nested deeper than any sane input (stack-exhaustion probe). */
function deepJsonText(random: Random): string {
  const depth = 1000 + random.int(20_000);
  return "[".repeat(depth) + "]".repeat(random.next() < 0.5 ? depth : 0);
}

/** Counted outcomes of a fuzz run. */
export interface FuzzReport {
  target: string;
  cases: number;
  /** Cases the decoder accepted (fully or as "incomplete, need more"). */
  accepted: number;
  /** Rejected cases by the decoder's own reason. */
  rejected: Record<string, number>;
  /** Largest bytes a decoder held between cases (checked against its bound). */
  maxHeldBytes: number;
  /** Wall time, ms. */
  ms: number;
}

/** A fuzz failure: replay with the same seed and case index. */
export class FuzzFailure extends Error {
  /**
   * @param target Which decoder.
   * @param seed The run's seed.
   * @param index The failing case.
   * @param cause What went wrong.
   */
  constructor(target: string, seed: number, index: number, cause: unknown) {
    super(
      `fuzz ${target}: case ${index} of seed ${seed} failed: ${
        cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)
      }`,
      { cause },
    );
    this.name = "FuzzFailure";
  }
}

interface Target {
  name: string;
  /** Runs one case; returns "accepted" or a rejection reason; throws only on a bug. */
  run(random: Random, index: number): string;
  /** Bytes held right now (for the memory bound) and the bound. */
  held?(): { bytes: number; max: number };
}

const controlSamples: ControlMessage[] = [
  { type: "hello", v: 2, role: "agent" },
  { type: "hello", v: 2, role: "relay", identity: "agent-1" },
  { type: "register", services: [{ name: "dns", protocol: "udp" }] },
  { type: "registered", services: ["dns"], rejected: [{ name: "x", reason: "forbidden" }] },
  { type: "deregister" },
  { type: "open", id: 7, service: "echo", protocol: "udp", flow: 3 },
  { type: "opened", id: 7, flow: 3 },
  { type: "refused", id: 7, reason: "forbidden", message: "no" },
  { type: "close", flow: 3, reason: "idle" },
  { type: "service_down", service: "dns" },
  { type: "draining", reconnect_ms: 0 },
  { type: "ping", seq: 1 },
  { type: "error", code: "x", message: "y" },
];

function frameOf(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

function controlTarget(): Target {
  const maxFrameBytes = 4096;
  const corpus = controlSamples.map((m) => encodeControl(m));
  let held = 0;
  return {
    name: "control",
    run(random) {
      let input: Uint8Array;
      const kind = random.int(10);
      if (kind === 0) input = random.bytes(random.int(300));
      else if (kind === 1) input = frameOf(enc.encode(deepJsonText(random)));
      else if (kind <= 4) {
        const value = mutateJson(random.pick(controlSamples), random);
        input = frameOf(enc.encode(JSON.stringify(value) ?? "null"));
      } else input = mutate(random.pick(corpus), random, corpus);
      const decoder = createControlDecoder({ maxFrameBytes });
      try {
        // Split at random points: frames arrive in arbitrary stream chunks.
        let offset = 0;
        while (offset < input.length) {
          const take = 1 + random.int(input.length - offset);
          decoder.push(input.subarray(offset, offset + take));
          offset += take;
          held = Math.max(held, decoder.buffered);
        }
        return "accepted";
      } catch (error) {
        if (error instanceof ProtocolError) return error.reason;
        throw error;
      }
    },
    held: () => ({ bytes: held, max: maxFrameBytes + 4 }),
  };
}

function datagramTarget(): Target {
  let clock = 0;
  const maxBytes = 64 * 1024;
  const reassembler = createReassembler({ maxBytes, timeoutMs: 2000, now: () => clock });
  const corpus: Uint8Array[] = [];
  const scratch = new Uint8Array(2048);
  for (const flow of [0, 1, 63, 64, 16383, 2 ** 30]) {
    const n = encodeWhole(flow, new Uint8Array([1, 2, 3]), scratch);
    corpus.push(scratch.slice(0, n));
    encodeFragments(flow, flow & 0xffff, new Uint8Array(3000).fill(7), 1200, scratch, (f) => {
      corpus.push(f.slice());
    });
  }
  let maxHeld = 0;
  return {
    name: "datagram",
    run(random) {
      clock += random.int(50);
      if (random.int(100) === 0) reassembler.sweep();
      const input = random.int(8) === 0
        ? random.bytes(random.int(1500))
        : mutate(random.pick(corpus), random, corpus);
      const view = parseDatagram(input, input.length);
      if (view === null) return "malformed";
      const before = { ...reassembler.drops };
      reassembler.add(view.flow, view, input);
      maxHeld = Math.max(maxHeld, reassembler.pendingBytes);
      // A fragment the reassembler refused is counted there; report it as this case's outcome.
      for (const [reason, count] of Object.entries(reassembler.drops)) {
        if (count > before[reason as keyof typeof before]) return `reassembly_${reason}`;
      }
      return "accepted";
    },
    held: () => ({ bytes: maxHeld, max: maxBytes }),
  };
}

function streamHeaderTarget(): Target {
  const corpus = [
    encodeStreamHeader({ type: "open", service: "web", protocol: "tcp" }),
    encodeStreamHeader({ type: "open", service: "db", protocol: "tcp", flow: 9 }),
    encodeStreamHeader({ type: "opened", flow: 9 }),
    encodeStreamHeader({ type: "refused", reason: "forbidden", message: "no" }),
  ];
  let held = 0;
  return {
    name: "stream_header",
    run(random) {
      const input = random.int(8) === 0
        ? random.bytes(random.int(200))
        : mutate(random.pick(corpus), random, corpus);
      const decoder = createStreamHeaderDecoder();
      try {
        let offset = 0;
        while (offset < input.length) {
          const wanted = decoder.wanted();
          if (wanted === 0) break; // header complete: the rest is TCP payload
          const take = Math.min(wanted, 1 + random.int(input.length - offset));
          held = Math.max(held, take);
          if (decoder.push(input.subarray(offset, offset + take)) !== null) break;
          offset += take;
        }
        return "accepted";
      } catch (error) {
        if (error instanceof ProtocolError) return error.reason;
        throw error;
      }
    },
    held: () => ({ bytes: held, max: MAX_STREAM_HEADER_BYTES + 2 }),
  };
}

/** Joins byte arrays. */
function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A chunk payload of 1..MAX_CHUNK_PAYLOAD bytes; mostly small, sometimes the largest. */
function chunkPayload(random: Random): Uint8Array {
  const roll = random.int(64);
  const length = roll === 0
    ? MAX_CHUNK_PAYLOAD
    : roll === 1
    ? 1 + random.int(MAX_CHUNK_PAYLOAD)
    : 1 + random.int(random.pick([4, 300, 1500]));
  // Cheap but position-dependent content: a misplaced byte shows in the comparison.
  const payload = new Uint8Array(length);
  const base = random.int(256);
  for (let i = 0; i < length; i++) payload[i] = (base + i * 31 + (i >> 8)) & 0xff;
  return payload;
}

/** Encoded chunks with their payloads. */
function chunkSequence(random: Random, min: number): { chunks: Uint8Array[]; payload: Uint8Array } {
  const payloads = Array.from({ length: min + random.int(8) }, () => chunkPayload(random));
  return { chunks: payloads.map(encodeChunk), payload: concatBytes(payloads) };
}

/** What a decode came to: its payload and end, or the framing error's reason. */
type ChunkOutcome = DecodedChunks | { reason: string };

function chunkOutcome(decode: () => DecodedChunks): ChunkOutcome {
  try {
    return decode();
  } catch (error) {
    if (error instanceof ChunkFramingError) return { reason: error.reason };
    throw error;
  }
}

function sameOutcome(a: ChunkOutcome, b: ChunkOutcome): boolean {
  if ("reason" in a || "reason" in b) {
    return "reason" in a && "reason" in b && a.reason === b.reason;
  }
  return a.ended === b.ended && sameBytes(a.payload, b.payload);
}

function describe(outcome: ChunkOutcome): string {
  return "reason" in outcome
    ? outcome.reason
    : `${outcome.payload.length} payload bytes, ended ${outcome.ended}`;
}

function chunkTarget(): Target {
  let held = 0;
  /**
   * Decodes `input` as a stream reader would see it: reads of random sizes (never more than
   * the decoder wants), some empty, and the FIN with the last bytes or in a read of its own.
   */
  function decodeSplit(input: Uint8Array, fin: boolean, random: Random): DecodedChunks {
    const decoder = createChunkDecoder();
    const finAlone = random.int(2) === 0;
    const parts: Uint8Array[] = [];
    let offset = 0;
    while (!decoder.ended) {
      const wanted = decoder.wanted();
      if (wanted < 1 || wanted > MAX_CHUNK_PAYLOAD) {
        throw new Error(`decoder wants ${wanted} bytes in phase ${decoder.phase}`);
      }
      const remaining = input.length - offset;
      if (remaining > 0 && random.int(16) === 0) decoder.push(new Uint8Array(0), false);
      const take = remaining === 0 ? 0 : Math.min(wanted, 1 + random.int(remaining));
      const last = offset + take === input.length;
      const withFin = fin && last && (take === 0 || !finAlone);
      if (take === 0 && !withFin) break; // incomplete: more bytes would be needed
      // A reader's buffer: what it holds for this read, plus what the decoder keeps.
      held = Math.max(held, take + decoder.buffered);
      const payload = decoder.push(input.subarray(offset, offset + take), withFin);
      offset += take;
      if (decoder.buffered > CHUNK_HEADER_BYTES - 1) {
        throw new Error(`decoder holds ${decoder.buffered} header bytes`);
      }
      if (payload.length > 0) parts.push(payload.slice());
      if (withFin) break;
    }
    return { payload: concatBytes(parts), ended: decoder.ended };
  }

  /** Split and unsplit decodes of one input must agree; returns the case's outcome. */
  function check(input: Uint8Array, fin: boolean, random: Random, expected?: ChunkOutcome) {
    const whole = chunkOutcome(() => decodeChunkStream(input, fin));
    const split = chunkOutcome(() => decodeSplit(input, fin, random));
    if (!sameOutcome(whole, split)) {
      throw new Error(`split decode gave ${describe(split)}, unsplit ${describe(whole)}`);
    }
    if (expected !== undefined && !sameOutcome(whole, expected)) {
      throw new Error(`decode gave ${describe(whole)}, expected ${describe(expected)}`);
    }
    return "reason" in whole ? whole.reason : "accepted";
  }

  return {
    name: "stream_chunks",
    run(random) {
      const kind = random.int(10);
      if (kind <= 3) {
        // A valid stream: chunks, then the end chunk with the FIN or a FIN between chunks.
        const { chunks, payload } = chunkSequence(random, 0);
        if (random.int(4) !== 0) chunks.push(END_CHUNK);
        return check(concatBytes(chunks), true, random, { payload, ended: true });
      }
      if (kind === 4) {
        // The FIN inside a chunk: in its header, right after it, or in its payload.
        const { chunks } = chunkSequence(random, 1);
        const cutChunk = random.int(chunks.length);
        const cut = 1 + random.int(chunks[cutChunk].length - 1);
        const input = concatBytes([
          ...chunks.slice(0, cutChunk),
          chunks[cutChunk].subarray(0, cut),
        ]);
        return check(input, true, random, { reason: "truncated_chunk" });
      }
      if (kind === 5) {
        // Data after the end chunk, with or without the FIN.
        const { chunks } = chunkSequence(random, 0);
        const tail = random.int(2) === 0 ? random.bytes(1 + random.int(16)) : encodeChunk(
          chunkPayload(random),
        );
        const input = concatBytes([...chunks, END_CHUNK, tail]);
        return check(input, random.int(2) === 0, random, { reason: "data_after_end" });
      }
      const fin = random.int(2) === 0;
      if (kind <= 7) return check(random.bytes(random.int(600)), fin, random);
      // A valid stream mutated: split and unsplit decodes must still agree.
      const { chunks } = chunkSequence(random, 0);
      chunks.push(END_CHUNK);
      const sample = concatBytes(chunks);
      return check(mutate(sample, random, [sample, END_CHUNK]), fin, random);
    },
    held: () => ({ bytes: held, max: MAX_CHUNK_PAYLOAD }),
  };
}

function httpTarget(): Target {
  const corpus = [
    "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
    "HEAD /readyz HTTP/1.0\r\n\r\n",
    "GET /health?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9090\r\nUser-Agent: probe\r\nAccept: */*\r\n\r\n",
  ].map((s) => enc.encode(s));
  return {
    name: "http_request",
    run(random) {
      const input = random.int(8) === 0
        ? random.bytes(random.int(512))
        : mutate(random.pick(corpus), random, corpus);
      const result = parseRequestHead(input, { maxHeadBytes: 1024, maxHeaderCount: 16 });
      if (result.ok === false) return `status_${result.status}`;
      return "accepted";
    },
  };
}

function configTarget(): Target {
  const tls = { cert: "c.pem", key: "k.pem", ca: "ca.pem" };
  const samples: [string, unknown, z.ZodType][] = [
    ["relay", {
      listen: "127.0.0.1:4433",
      tls,
      services: { echo: { connectors: ["c1"], agents: ["a1"] } },
      limits: { max_connections: 5 },
    }, relayConfigSchema],
    ["connector", {
      relays: ["127.0.0.1:4433"],
      tls,
      services: { echo: "udp://127.0.0.1:7" },
    }, connectorConfigSchema],
    ["agent", {
      relays: ["127.0.0.1:4433"],
      tls,
      forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
    }, agentConfigSchema],
  ];
  const texts = samples.map(([, value]) => enc.encode(JSON.stringify(value)));
  const dec = new TextDecoder();
  return {
    name: "config",
    run(random) {
      const [, value, schema] = random.pick(samples);
      const kind = random.int(4);
      const text = kind === 0
        ? dec.decode(mutate(random.pick(texts), random, texts))
        : kind === 1
        ? deepJsonText(random)
        : JSON.stringify(mutateJson(value, random)) ?? "";
      // Env and flags are parsed too: one hostile value through each path.
      const env: Record<string, string> = random.int(4) === 0
        ? { ZTNA_LIMITS_MAX_CONNECTIONS: String(hostileJson(random)) }
        : {};
      const args = random.int(4) === 0 ? [`--log_level=${String(hostileJson(random))}`] : [];
      try {
        // Secret references are left out of the samples: a mutation must not read files.
        loadConfig(schema, {
          args,
          env: { ZTNA_CONFIG: "/fuzz.json", ...env },
          readFile: () => text,
        });
        return "accepted";
      } catch (error) {
        if (error instanceof ConfigError) return "config_error";
        throw error;
      }
    },
  };
}

/** The fuzz targets by name. */
export const fuzzTargets: Record<string, () => Target> = {
  control: controlTarget,
  datagram: datagramTarget,
  stream_header: streamHeaderTarget,
  stream_chunks: chunkTarget,
  http_request: httpTarget,
  config: configTarget,
};

/**
 * Runs `cases` cases against one target. Throws {@linkcode FuzzFailure} on the first bug.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { runFuzz } from "./fuzz.ts";
 *
 * const report = runFuzz("http_request", 200, 1);
 * const rejected = Object.values(report.rejected).reduce((a, b) => a + b, 0);
 * assert.equal(report.accepted + rejected, 200);
 * ```
 */
export function runFuzz(target: string, cases: number, seed: number): FuzzReport {
  const make = fuzzTargets[target];
  if (make === undefined) {
    throw new RangeError(
      `Cannot run fuzz as 'target' must be one of ${
        Object.keys(fuzzTargets).join(", ")
      }: current value is ${target}`,
    );
  }
  const t = make();
  const random = createRandom(seed);
  const report: FuzzReport = {
    target,
    cases,
    accepted: 0,
    rejected: {},
    maxHeldBytes: 0,
    ms: 0,
  };
  const started = performance.now();
  for (let index = 0; index < cases; index++) {
    let outcome: string;
    try {
      outcome = t.run(random, index);
    } catch (error) {
      throw new FuzzFailure(target, seed, index, error);
    }
    if (outcome === "accepted") report.accepted++;
    else report.rejected[outcome] = (report.rejected[outcome] ?? 0) + 1;
    const held = t.held?.();
    if (held !== undefined) {
      report.maxHeldBytes = held.bytes;
      if (held.bytes > held.max) {
        throw new FuzzFailure(target, seed, index, `holds ${held.bytes} bytes, bound ${held.max}`);
      }
    }
  }
  report.ms = Math.round(performance.now() - started);
  return report;
}

if (import.meta.main) {
  // deno task fuzz [--cases N] [--seed S] [target ...]
  const args = [...Deno.args];
  const option = (name: string, fallback: number) => {
    const i = args.indexOf(`--${name}`);
    if (i < 0) return fallback;
    const value = Number(args[i + 1]);
    args.splice(i, 2);
    return value;
  };
  const cases = option("cases", 200_000);
  const seed = option("seed", Date.now() % 2 ** 31);
  const targets = args.length > 0 ? args : Object.keys(fuzzTargets);
  let failed = false;
  for (const target of targets) {
    try {
      console.log(JSON.stringify(runFuzz(target, cases, seed)));
    } catch (error) {
      failed = true;
      console.error(String(error instanceof Error ? error.message : error));
    }
  }
  Deno.exit(failed ? 1 : 0);
}
