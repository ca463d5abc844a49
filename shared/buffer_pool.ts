/**
 * Fixed-size buffer pool for receive paths: one `Uint8Array` per datagram or
 * packet read, returned after use, so steady-state traffic allocates nothing.
 *
 * @module
 */

/** Options for {@linkcode createBufferPool}. */
export interface BufferPoolOptions {
  /** Bytes per buffer (every buffer of the pool has this length). */
  size: number;
  /** Most free buffers kept for reuse; extra released buffers are left to GC. */
  max: number;
}

/** Counters of a {@linkcode BufferPool}. */
export interface BufferPoolStats {
  /** Buffers allocated over the pool's lifetime. */
  allocated: number;
  /** Free buffers held for reuse. */
  available: number;
  /** Buffers acquired and not yet released. */
  inUse: number;
  /** Acquires that found no free buffer and had to allocate. */
  misses: number;
}

/** A pool of equal-size buffers. */
export interface BufferPool {
  /**
   * Takes a free buffer, or allocates one when none is free. Contents are
   * whatever the previous user left (not zeroed): receive paths overwrite them.
   *
   * @returns A buffer of the pool's size.
   */
  acquire(): Uint8Array;
  /**
   * Returns a buffer acquired from this pool. It is kept for reuse while fewer
   * than `max` are free, else dropped.
   *
   * @param buf The buffer; must not be used after release.
   * @throws {RangeError} When `buf` has the wrong size, is not from this pool or is already released.
   */
  release(buf: Uint8Array): void;
  /** A snapshot of the pool's counters. */
  readonly stats: BufferPoolStats;
}

/**
 * Creates a buffer pool.
 *
 * @example Usage
 * ```ts
 * import { createBufferPool } from "./buffer_pool.ts";
 * import assert from "node:assert/strict";
 *
 * const pool = createBufferPool({ size: 1500, max: 4 });
 * const buf = pool.acquire();
 * assert.equal(buf.length, 1500);
 * pool.release(buf);
 * assert.equal(pool.acquire(), buf);
 * ```
 *
 * @param options Buffer size and how many free buffers to keep.
 * @returns The pool.
 */
export function createBufferPool(options: BufferPoolOptions): BufferPool {
  const { size, max } = options;
  if (!Number.isSafeInteger(size) || size <= 0) {
    throw new RangeError(
      `Cannot create buffer pool as 'size' must be a positive integer: current value is ${size}`,
    );
  }
  if (!Number.isSafeInteger(max) || max < 0) {
    throw new RangeError(
      `Cannot create buffer pool as 'max' must be a non-negative integer: current value is ${max}`,
    );
  }

  const free: Uint8Array[] = [];
  // Ownership and membership checks turn double releases and foreign buffers
  // into errors instead of silently corrupting the counters or sharing a buffer.
  const owned = new WeakSet<Uint8Array>();
  const pooled = new WeakSet<Uint8Array>();
  let allocated = 0;
  let inUse = 0;
  let misses = 0;

  function acquire(): Uint8Array {
    inUse++;
    const buf = free.pop();
    if (buf !== undefined) {
      pooled.delete(buf);
      return buf;
    }
    misses++;
    allocated++;
    const fresh = new Uint8Array(size);
    owned.add(fresh);
    return fresh;
  }

  function release(buf: Uint8Array): void {
    if (buf.length !== size) {
      throw new RangeError(
        `Cannot release buffer as 'buf' must be ${size} bytes long: current value is ${buf.length}`,
      );
    }
    if (!owned.has(buf)) {
      throw new RangeError(
        "Cannot release buffer as 'buf' must be acquired from this pool: current value is a foreign buffer",
      );
    }
    if (pooled.has(buf)) {
      throw new RangeError(
        "Cannot release buffer as 'buf' must be in use: current value is already released",
      );
    }
    inUse--;
    if (free.length < max) {
      free.push(buf);
      pooled.add(buf);
    } else {
      // Forget it so a later release of the same buffer is caught as foreign.
      owned.delete(buf);
    }
  }

  return {
    acquire,
    release,
    get stats(): BufferPoolStats {
      return { allocated, available: free.length, inUse, misses };
    },
  };
}
