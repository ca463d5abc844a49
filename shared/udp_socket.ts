/**
 * A bound UDP socket with a read loop and pooled, allocation-free sends.
 *
 * Sockets are always bound before their first send: an unbound `node:dgram` sender collapsed
 * to about 500 datagrams/s here (see PLATFORM.md), and binding makes the permission scope
 * explicit. `Deno.listenDatagram` lets us receive into one reused buffer.
 *
 * @module
 */
import { bindAddress } from "./bind_error.ts";
import { type BufferPool, createBufferPool } from "./buffer_pool.ts";

/** Where a datagram goes: prebuilt once per peer so sends do not allocate addresses. */
export type UdpTarget = Deno.NetAddr;

/** Builds a send target for `host` (an IP literal) and `port`. */
export function udpTarget(host: string, port: number): UdpTarget {
  return { transport: "udp", hostname: host, port };
}

/** Called for every datagram; `data` is only valid during the call. */
export type PacketHandler = (data: Uint8Array, from: Deno.NetAddr) => void;

/** Options for {@linkcode openUdpSocket}. */
export interface UdpSocketOptions {
  /** Local address to bind (an IP literal). */
  host: string;
  /** Local port; 0 picks an ephemeral one. */
  port: number;
  /** Receives every datagram. */
  onPacket: PacketHandler;
  /** Told about send/receive failures (the socket stays open). */
  onError?: (error: unknown, during: "send" | "receive") => void;
  /**
   * Size of each pooled send buffer; larger sends are copied once.
   * @default {2048}
   */
  sendBufferBytes?: number;
  /**
   * Size of the one receive buffer.
   * @default {65536}
   */
  receiveBytes?: number;
}

/** A bound UDP socket. */
export interface UdpSocket {
  /** The bound local address (actual port when 0 was asked). */
  readonly addr: Deno.NetAddr;
  /** The pool outgoing packets come from; `sendOwned` takes buffers from it. */
  readonly pool: BufferPool;
  /** Sends a packet written into `buffer` (acquired from `pool`); the socket releases it. */
  sendOwned(buffer: Uint8Array, length: number, to: UdpTarget): void;
  /** Sends a copy of `data`; the caller may reuse `data` at once. */
  send(data: Uint8Array, to: UdpTarget): void;
  /** Datagrams sent but not yet handed to the kernel. */
  readonly pendingSends: number;
  /** Stops the read loop and closes the socket. Idempotent. */
  close(): void;
  /** Resolves when the read loop has ended. */
  readonly closed: Promise<void>;
}

/**
 * Binds a UDP socket and starts its read loop.
 *
 * @example
 * ```ts ignore
 * const socket = openUdpSocket({ host: "127.0.0.1", port: 0, onPacket: (d, from) => {} });
 * socket.send(new TextEncoder().encode("hi"), udpTarget("127.0.0.1", 7));
 * ```
 */
export function openUdpSocket(options: UdpSocketOptions): UdpSocket {
  const {
    host,
    port,
    onPacket,
    onError = () => {},
    sendBufferBytes = 2048,
    receiveBytes = 65_536,
  } = options;
  // Sends complete asynchronously, so each one owns a pooled buffer until the kernel has it.
  const pool = createBufferPool({ size: sendBufferBytes, max: 4096 });
  const conn = bindAddress(
    host,
    port,
    () => Deno.listenDatagram({ transport: "udp", hostname: host, port }),
  );
  const receiveBuffer = new Uint8Array(receiveBytes);
  let open = true;
  let pendingSends = 0;

  // Deno starts concurrent `send()` calls last-first: a burst of packets handed over without
  // waiting leaves the socket in reverse order, which a QUIC peer sees as reordering (and
  // beyond three packets as loss). So sends wait in one FIFO and go to the kernel one at a
  // time; `owned` marks pooled buffers, released once the kernel has them.
  const queue: {
    buffers: Uint8Array[];
    lengths: number[];
    targets: UdpTarget[];
    owned: boolean[];
  } = { buffers: [], lengths: [], targets: [], owned: [] };
  let head = 0;
  let sending = false;

  function enqueue(buffer: Uint8Array, length: number, to: UdpTarget, owned: boolean): void {
    pendingSends++;
    queue.buffers.push(buffer);
    queue.lengths.push(length);
    queue.targets.push(to);
    queue.owned.push(owned);
    if (!sending) drainQueue();
  }

  async function drainQueue(): Promise<void> {
    sending = true;
    while (head < queue.buffers.length) {
      const buffer = queue.buffers[head];
      const length = queue.lengths[head];
      const to = queue.targets[head];
      const owned = queue.owned[head];
      head++;
      if (open) {
        try {
          await conn.send(length === buffer.length ? buffer : buffer.subarray(0, length), to);
        } catch (error) {
          if (open) onError(error, "send");
        }
      }
      pendingSends--;
      if (owned) pool.release(buffer);
      // Under sustained load the queue may never run empty: drop the sent prefix now and then.
      if (head >= 1024) compactQueue();
    }
    compactQueue();
    sending = false;
  }

  function compactQueue(): void {
    queue.buffers.splice(0, head);
    queue.lengths.splice(0, head);
    queue.targets.splice(0, head);
    queue.owned.splice(0, head);
    head = 0;
  }

  function sendOwned(buffer: Uint8Array, length: number, to: UdpTarget): void {
    if (!open) {
      pool.release(buffer);
      return;
    }
    enqueue(buffer, length, to, true);
  }

  async function readLoop(): Promise<void> {
    while (open) {
      let data: Uint8Array;
      let from: Deno.Addr;
      try {
        [data, from] = await conn.receive(receiveBuffer);
      } catch (error) {
        if (!open || error instanceof Deno.errors.BadResource) return;
        onError(error, "receive");
        continue;
      }
      try {
        onPacket(data, from as Deno.NetAddr);
      } catch (error) {
        // A handler bug must not stop the socket serving every other peer.
        onError(error, "receive");
      }
    }
  }

  const closed = readLoop();
  return {
    addr: conn.addr as Deno.NetAddr,
    pool,
    sendOwned,
    send(data, to) {
      if (data.length > sendBufferBytes) {
        // Larger than a pooled buffer (a big backend payload): rare, so a one-off copy is fine.
        if (open) enqueue(data.slice(), data.length, to, false);
        return;
      }
      const buffer = pool.acquire();
      buffer.set(data);
      sendOwned(buffer, data.length, to);
    },
    get pendingSends() {
      return pendingSends;
    },
    close() {
      if (!open) return;
      open = false;
      conn.close();
    },
    closed,
  };
}
