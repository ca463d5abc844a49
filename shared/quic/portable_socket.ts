/**
 * The portable UDP socket: `Deno.listenDatagram` alone, one Deno op per datagram each way.
 * It serves hosts without the batched socket and sandboxes without `--allow-ffi` for libc.
 *
 * @module
 */
import { type BufferPool, createBufferPool } from "../buffer_pool.ts";
import { deliver, stats } from "./_udp_common.ts";
import type { UdpSocket, UdpSocketOptions, UdpTarget } from "./udp_socket.ts";

/**
 * Serves a socket `Deno.listenDatagram` opened with one Deno op per datagram each way and
 * its sends in one FIFO.
 */
export function openPortableSocket(
  conn: Deno.DatagramConn,
  options: UdpSocketOptions,
): UdpSocket {
  const { onPacket, onError = () => {}, sendBufferBytes = 2048, receiveBytes = 65_536 } = options;
  // Sends complete asynchronously, so each one owns a pooled buffer until the kernel has it.
  const pool: BufferPool = createBufferPool({ size: sendBufferBytes, max: 4096 });
  const receiveBuffer = new Uint8Array(receiveBytes);
  let open = true;
  let pendingSends = 0;
  let reserved: Uint8Array | null = null;

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
          stats.packets.sent++;
          stats.calls.sent++;
        } catch (error) {
          if (open) {
            stats.sendDrops.error++;
            onError(error, "send");
          }
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
      stats.packets.received++;
      stats.calls.received++;
      deliver(onPacket, onError, data, from as Deno.NetAddr);
    }
  }

  const closed = readLoop();
  return {
    addr: conn.addr as Deno.NetAddr,
    kind: "portable",
    sendBuffer() {
      reserved ??= pool.acquire();
      return reserved;
    },
    commit(length, to) {
      const buffer = reserved!;
      reserved = null;
      if (!open) pool.release(buffer);
      else enqueue(buffer, length, to, true);
    },
    send(data, to) {
      if (!open) return;
      if (data.length > sendBufferBytes) {
        // Larger than a pooled buffer (a big backend payload): rare, so a one-off copy is fine.
        enqueue(data.slice(), data.length, to, false);
        return;
      }
      const buffer = pool.acquire();
      buffer.set(data);
      enqueue(buffer, data.length, to, true);
    },
    get pendingSends() {
      return pendingSends;
    },
    close() {
      if (!open) return;
      open = false;
      if (reserved !== null) pool.release(reserved);
      reserved = null;
      conn.close();
    },
    closed,
  };
}
