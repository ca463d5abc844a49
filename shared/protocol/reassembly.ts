/**
 * Reassembly of fragmented DATAGRAM payloads (tag 1, see `datagram.ts`) with
 * bounded memory and a timeout, so a peer that sends fragments it never
 * completes cannot grow memory without limit.
 *
 * @module
 */

import type { DatagramView } from "./datagram.ts";

/** Why a pending datagram or fragment was dropped. */
export type ReassemblyDropReason = "timeout" | "over_budget" | "inconsistent" | "duplicate";

/** Options for {@linkcode createReassembler}. */
export interface ReassemblerOptions {
  /**
   * Most bytes held for incomplete datagrams (chunks plus a fixed per-datagram
   * overhead of {@linkcode PENDING_ENTRY_OVERHEAD} bytes).
   *
   * @default {4194304}
   */
  maxBytes?: number;
  /**
   * How long an incomplete datagram waits for its missing fragments, in ms.
   *
   * @default {2000}
   */
  timeoutMs?: number;
  /**
   * Clock in ms; injectable for tests.
   *
   * @default {Date.now}
   */
  now?: () => number;
}

/** A reassembler of fragmented datagrams for one connection. */
export interface Reassembler {
  /**
   * Adds one parsed datagram. Whole datagrams (tag 0) are returned as a view of
   * `buf` at once; a fragment's chunk is copied and the complete payload is
   * returned when its last fragment arrives.
   *
   * @param flow The local flow id the datagram belongs to.
   * @param view The parsed datagram (from `parseDatagram`).
   * @param buf The bytes `view` was parsed from.
   * @returns The complete payload, or `null` while incomplete or dropped.
   */
  add(flow: number, view: DatagramView, buf: Uint8Array): Uint8Array | null;
  /** Drops pending datagrams older than the timeout. */
  sweep(): void;
  /**
   * Forgets every pending datagram of a flow (the flow closed); not counted as drops.
   *
   * @param flow The flow id.
   */
  dropFlow(flow: number): void;
  /** Bytes held for incomplete datagrams, overhead included. */
  readonly pendingBytes: number;
  /** Number of incomplete datagrams held. */
  readonly pendingCount: number;
  /** Dropped datagrams (fragments for `duplicate`) by reason, since creation. */
  readonly drops: Readonly<Record<ReassemblyDropReason, number>>;
}

/**
 * Bytes charged per pending datagram on top of its chunks, so that floods of
 * empty or tiny fragments are bounded by `maxBytes` too.
 */
export const PENDING_ENTRY_OVERHEAD = 128;

interface Pending {
  flow: number;
  datagramId: number;
  count: number;
  received: number;
  chunks: (Uint8Array | undefined)[];
  bytes: number;
  createdAt: number;
}

/**
 * Creates a reassembler. Pending datagrams are keyed by (flow, datagram id).
 * When a chunk would exceed `maxBytes`, the oldest pending datagrams are dropped
 * first (`over_budget`); a fragment whose count disagrees with earlier ones
 * drops its datagram (`inconsistent`); a repeated index is ignored
 * (`duplicate`); datagrams older than `timeoutMs` are dropped on `add` and
 * `sweep` (`timeout`).
 *
 * @example Usage
 * ```ts
 * import { createReassembler } from "./reassembly.ts";
 * import { encodeFragments, parseDatagram } from "./datagram.ts";
 * import assert from "node:assert/strict";
 *
 * const payload = new Uint8Array(3000).fill(7);
 * const frames: Uint8Array[] = [];
 * encodeFragments(1, 0, payload, 1200, new Uint8Array(1200), (f) => frames.push(f.slice()));
 * const reassembler = createReassembler();
 * let result: Uint8Array | null = null;
 * for (const frame of frames.reverse()) {
 *   result = reassembler.add(1, parseDatagram(frame, frame.length)!, frame);
 * }
 * assert.deepEqual(result, payload);
 * assert.equal(reassembler.pendingBytes, 0);
 * ```
 *
 * @param options Limits and clock.
 * @returns The reassembler.
 */
export function createReassembler(options: ReassemblerOptions = {}): Reassembler {
  const { maxBytes = 4 * 1024 * 1024, timeoutMs = 2000, now = Date.now } = options;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < PENDING_ENTRY_OVERHEAD) {
    throw new RangeError(
      `Cannot create reassembler as 'maxBytes' must be an integer >= ${PENDING_ENTRY_OVERHEAD}: current value is ${maxBytes}`,
    );
  }
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new RangeError(
      `Cannot create reassembler as 'timeoutMs' must be a positive number: current value is ${timeoutMs}`,
    );
  }

  // Lookup by flow then datagram id; `byAge` iterates in insertion order, which
  // is creation order, so the oldest (and first to expire) come first.
  const byFlow = new Map<number, Map<number, Pending>>();
  const byAge = new Set<Pending>();
  const drops: Record<ReassemblyDropReason, number> = {
    timeout: 0,
    over_budget: 0,
    inconsistent: 0,
    duplicate: 0,
  };
  let pendingBytes = 0;

  function remove(entry: Pending): void {
    byAge.delete(entry);
    const ids = byFlow.get(entry.flow);
    if (ids !== undefined) {
      ids.delete(entry.datagramId);
      if (ids.size === 0) byFlow.delete(entry.flow);
    }
    pendingBytes -= entry.bytes;
  }

  function sweep(): void {
    const deadline = now() - timeoutMs;
    for (const entry of byAge) {
      if (entry.createdAt > deadline) break;
      remove(entry);
      drops.timeout++;
    }
  }

  // Makes room for `needed` more bytes by dropping the oldest entries other than `keep`.
  function makeRoom(needed: number, keep: Pending | undefined): boolean {
    // Evicting others cannot help a datagram that is too big on its own.
    if ((keep?.bytes ?? 0) + needed > maxBytes) return false;
    for (const entry of byAge) {
      if (pendingBytes + needed <= maxBytes) return true;
      if (entry === keep) continue;
      remove(entry);
      drops.over_budget++;
    }
    return pendingBytes + needed <= maxBytes;
  }

  function add(flow: number, view: DatagramView, buf: Uint8Array): Uint8Array | null {
    if (view.tag === 0) return buf.subarray(view.bodyOffset, view.bodyEnd);
    sweep();
    const { datagramId, index, count } = view;
    const chunkLength = view.bodyEnd - view.bodyOffset;
    let ids = byFlow.get(flow);
    let entry = ids?.get(datagramId);
    if (entry !== undefined) {
      if (entry.count !== count) {
        remove(entry);
        drops.inconsistent++;
        return null;
      }
      if (entry.chunks[index] !== undefined) {
        drops.duplicate++;
        return null;
      }
      if (!makeRoom(chunkLength, entry)) {
        remove(entry);
        drops.over_budget++;
        return null;
      }
    } else {
      if (!makeRoom(PENDING_ENTRY_OVERHEAD + chunkLength, undefined)) {
        drops.over_budget++;
        return null;
      }
      entry = {
        flow,
        datagramId,
        count,
        received: 0,
        chunks: new Array(count),
        bytes: PENDING_ENTRY_OVERHEAD,
        createdAt: now(),
      };
      if (ids === undefined) {
        ids = new Map();
        byFlow.set(flow, ids);
      }
      ids.set(datagramId, entry);
      byAge.add(entry);
      pendingBytes += PENDING_ENTRY_OVERHEAD;
    }
    // Copy: `buf` is the caller's receive buffer and is reused for the next datagram.
    entry.chunks[index] = buf.slice(view.bodyOffset, view.bodyEnd);
    entry.bytes += chunkLength;
    pendingBytes += chunkLength;
    entry.received++;
    if (entry.received < entry.count) return null;

    remove(entry);
    const payload = new Uint8Array(entry.bytes - PENDING_ENTRY_OVERHEAD);
    let offset = 0;
    for (const chunk of entry.chunks as Uint8Array[]) {
      payload.set(chunk, offset);
      offset += chunk.length;
    }
    return payload;
  }

  function dropFlow(flow: number): void {
    const ids = byFlow.get(flow);
    if (ids === undefined) return;
    for (const entry of ids.values()) {
      byAge.delete(entry);
      pendingBytes -= entry.bytes;
    }
    byFlow.delete(flow);
  }

  return {
    add,
    sweep,
    dropFlow,
    get pendingBytes() {
      return pendingBytes;
    },
    get pendingCount() {
      return byAge.size;
    },
    get drops() {
      return drops;
    },
  };
}
