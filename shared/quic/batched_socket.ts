/**
 * The batched UDP socket (Linux): the socket is still opened and bound by
 * `Deno.listenDatagram`, so Deno's permission check on the bind and Deno's own reactor wake
 * us when it is readable; everything else goes through libc. After a wake-up, `recvmmsg`
 * takes up to 64 datagrams per call until the socket is empty; sends queued in one
 * event-loop turn, by every socket of the process, leave in one `sendmmsg` per socket at the
 * turn's end, with runs of equal datagrams to one peer merged into one GSO (`UDP_SEGMENT`)
 * send. Receive and send buffers are raised (`SO_RCVBUF`, or `SO_RCVBUFFORCE` when
 * privileged), and the kernel's count of datagrams dropped on a full buffer is read from
 * `SO_RXQ_OVFL`.
 *
 * Waiting on Deno's reactor rather than on a blocking `poll` in a thread keeps an idle
 * socket's first datagram as fast as the portable kind's (`bench:wake`).
 *
 * The sends bypass Deno's `--allow-net` check, so every new destination is checked against
 * Deno's permissions here, with the result cached per target: a destination the sandbox does
 * not grant fails as it would on the portable socket.
 *
 * @module
 */
import { formatHostPort } from "../config/address.ts";
import { deliver, stats } from "./_udp_common.ts";
import {
  AF_INET,
  AF_INET6,
  CMSG,
  CMSG_LEN_U16,
  CMSG_LEN_U32,
  CMSG_SPACE_U16,
  CMSG_SPACE_U32,
  EAGAIN,
  EINTR,
  IOVEC_BYTES,
  type LibcSymbols,
  MMSGHDR,
  MSG_DONTWAIT,
  MSG_TRUNC,
  openLibc,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_RXQ_OVFL,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SO_TYPE,
  SOCK_DGRAM,
  SOCKADDR_BYTES,
  SOL_SOCKET,
  SOL_UDP,
  UDP_SEGMENT,
} from "./libc.ts";
import { createSockaddrDecoder, encodeSockaddr } from "./socket_address.ts";
import type { UdpSocket, UdpSocketOptions, UdpTarget } from "./udp_socket.ts";

/** Datagrams per `recvmmsg`. */
const RECEIVE_BATCH = 64;
/** `recvmmsg` calls per wake-up before the loop lets other work run. */
const RECEIVE_CALLS_PER_WAKE = 8;
/** Every received datagram gets a slot this large: the largest UDP payload fits. */
const RECEIVE_SLOT = 65_536;
/** Datagrams queued for sending before the queue is flushed early. */
const SEND_QUEUE = 256;
/** Bytes of queued datagrams before the queue is flushed early. */
const SEND_BYTES = 1024 * 1024;
/** At most this many segments per GSO send (the kernel's UDP_MAX_SEGMENTS). */
const GSO_MAX_SEGMENTS = 64;
/** At most this many bytes per GSO send (a UDP datagram's limit, with room for headers). */
const GSO_MAX_BYTES = 65_000;

/**
 * One `ArrayBuffer` per region, allocated once: FFI structs must never live in small typed
 * arrays, which V8 moves on the heap (PLATFORM.md, trap 1). These are large, so their memory
 * is outside the heap and stays put; pointers into them are written once.
 */
interface Region {
  bytes: Uint8Array;
  view: DataView;
  /** Address of `bytes[0]`. */
  base: number;
}

function region(size: number): Region {
  const libc = openLibc();
  if (!libc.ok) throw new Error(libc.reason);
  const bytes = new Uint8Array(size);
  return { bytes, view: new DataView(bytes.buffer), base: Number(libc.addressOf(bytes)) };
}

const TWO_32 = 2 ** 32;

/**
 * Writes a 64-bit little-endian word from a Number: addresses and sizes here are below 2^53,
 * and two 32-bit writes avoid a BigInt allocation per field on the per-datagram path.
 */
function setWord(view: DataView, at: number, value: number): void {
  view.setUint32(at, value % TWO_32, true);
  view.setUint32(at + 4, Math.floor(value / TWO_32), true);
}

interface ReceiveMemory {
  vec: Region;
  iov: Region;
  names: Region;
  control: Region;
  data: Region;
}

let receiveMemory: ReceiveMemory | undefined;

/**
 * The receive arena, shared by every batched socket: datagrams are delivered synchronously
 * right after `recvmmsg`, before any other socket's read loop runs again.
 */
function receiveArena(): ReceiveMemory {
  if (receiveMemory !== undefined) return receiveMemory;
  const memory: ReceiveMemory = {
    vec: region(RECEIVE_BATCH * MMSGHDR.bytes),
    iov: region(RECEIVE_BATCH * IOVEC_BYTES),
    names: region(RECEIVE_BATCH * SOCKADDR_BYTES),
    control: region(RECEIVE_BATCH * CMSG_SPACE_U32),
    data: region(RECEIVE_BATCH * RECEIVE_SLOT),
  };
  for (let i = 0; i < RECEIVE_BATCH; i++) {
    const iov = i * IOVEC_BYTES;
    setWord(memory.iov.view, iov, memory.data.base + i * RECEIVE_SLOT);
    setWord(memory.iov.view, iov + 8, RECEIVE_SLOT);
    const m = i * MMSGHDR.bytes;
    const v = memory.vec.view;
    setWord(v, m + MMSGHDR.name, memory.names.base + i * SOCKADDR_BYTES);
    v.setUint32(m + MMSGHDR.namelen, SOCKADDR_BYTES, true);
    setWord(v, m + MMSGHDR.iov, memory.iov.base + iov);
    setWord(v, m + MMSGHDR.iovlen, 1);
    setWord(v, m + MMSGHDR.control, memory.control.base + i * CMSG_SPACE_U32);
    setWord(v, m + MMSGHDR.controllen, CMSG_SPACE_U32);
  }
  receiveMemory = memory;
  return memory;
}

/** One queued datagram. */
interface Outgoing {
  socket: BatchedState;
  to: UdpTarget;
  offset: number;
  length: number;
}

interface SendMemory {
  vec: Region;
  iov: Region;
  names: Region;
  control: Region;
  data: Region;
  queue: Outgoing[];
  /** Next free byte of `data`. */
  used: number;
  flushScheduled: boolean;
}

let sendMemory: SendMemory | undefined;

function sendArena(): SendMemory {
  if (sendMemory !== undefined) return sendMemory;
  const memory: SendMemory = {
    vec: region(SEND_QUEUE * MMSGHDR.bytes),
    iov: region(SEND_QUEUE * IOVEC_BYTES),
    names: region(SEND_QUEUE * SOCKADDR_BYTES),
    control: region(SEND_QUEUE * CMSG_SPACE_U16),
    // Room for a full queue of the largest datagram beyond the byte limit.
    data: region(SEND_BYTES + RECEIVE_SLOT),
    queue: [],
    used: 0,
    flushScheduled: false,
  };
  for (let i = 0; i < SEND_QUEUE; i++) {
    const c = i * CMSG_SPACE_U16;
    setWord(memory.control.view, c + CMSG.len, CMSG_LEN_U16);
    // Message i always names address slot i and iovec i; only their contents change.
    const m = i * MMSGHDR.bytes;
    setWord(memory.vec.view, m + MMSGHDR.name, memory.names.base + i * SOCKADDR_BYTES);
    setWord(memory.vec.view, m + MMSGHDR.iov, memory.iov.base + i * IOVEC_BYTES);
    setWord(memory.vec.view, m + MMSGHDR.iovlen, 1);
    memory.control.view.setInt32(c + CMSG.level, SOL_UDP, true);
    memory.control.view.setInt32(c + CMSG.type, UDP_SEGMENT, true);
  }
  sendMemory = memory;
  return memory;
}

/** A destination encoded for one socket family, and whether the sandbox allows it. */
interface EncodedTarget {
  family: number;
  sockaddr: Uint8Array;
  length: number;
  /** Null when allowed, else the error the portable socket would have thrown. */
  refusal: Error | null;
}

const encodedTargets = new WeakMap<UdpTarget, EncodedTarget>();
/**
 * The same by address, for target objects seen once: a reply to a datagram's `from` (Deno
 * makes a new one per receive), a Retry to a new client. Without it each of those would pay a
 * permission query; bounded, and started over when full.
 */
const encodedByAddress = new Map<string, EncodedTarget>();
const BY_ADDRESS_LIMIT = 16_384;

function encodeTarget(to: UdpTarget, family: number): EncodedTarget {
  const cached = encodedTargets.get(to);
  if (cached !== undefined && cached.family === family) return cached;
  const key = `${family} ${to.hostname} ${to.port}`;
  let encoded = encodedByAddress.get(key);
  if (encoded === undefined) {
    const sockaddr = new Uint8Array(SOCKADDR_BYTES);
    const length = encodeSockaddr(to.hostname, to.port, family, sockaddr);
    let refusal: Error | null = null;
    const host = formatHostPort({ host: to.hostname, port: to.port });
    if (length === 0) refusal = new TypeError(`cannot send to ${host} from this socket`);
    else if (Deno.permissions.querySync({ name: "net", host }).state !== "granted") {
      refusal = new Deno.errors.NotCapable(`Requires net access to "${host}"`);
    }
    encoded = { family, sockaddr, length, refusal };
    if (encodedByAddress.size >= BY_ADDRESS_LIMIT) encodedByAddress.clear();
    encodedByAddress.set(key, encoded);
  }
  encodedTargets.set(to, encoded);
  return encoded;
}

/** Per-socket state of a batched socket. */
interface BatchedState {
  fd: number;
  family: number;
  open: boolean;
  pending: number;
  /** Cleared for good when a GSO send fails (no offload on the route's device). */
  gso: boolean;
  onError: (error: unknown, during: "send" | "receive") => void;
  /** Last `SO_RXQ_OVFL` value seen. */
  overflow: number;
}

/** Queues `socket`'s reservation of `length` bytes at the arena's end. */
function queueOutgoing(state: BatchedState, length: number, to: UdpTarget): void {
  const memory = sendArena();
  memory.queue.push({ socket: state, to, offset: memory.used, length });
  memory.used += length;
  state.pending++;
  if (!memory.flushScheduled) {
    memory.flushScheduled = true;
    queueMicrotask(flushQueued);
  }
}

/**
 * Makes room for `bytes` more in the send arena, flushing what is queued when it is full.
 * Returns the offset the datagram goes to.
 */
function reserve(bytes: number): number {
  const memory = sendArena();
  if (memory.queue.length >= SEND_QUEUE || memory.used + bytes > SEND_BYTES + RECEIVE_SLOT) {
    flushSends();
  }
  return memory.used;
}

function flushQueued(): void {
  sendArena().flushScheduled = false;
  flushSends();
}

let libcSymbols: LibcSymbols | undefined;
let libcErrno: (() => number) | undefined;

/**
 * Hands every queued datagram to the kernel: one `sendmmsg` per run of one socket's
 * datagrams, equal-sized runs to one peer merged into a GSO send.
 */
function flushSends(): void {
  const memory = sendMemory;
  if (memory === undefined || memory.queue.length === 0) return;
  const { queue } = memory;
  let start = 0;
  while (start < queue.length) {
    const state = queue[start].socket;
    let end = start + 1;
    while (end < queue.length && queue[end].socket === state) end++;
    if (state.open) sendRun(memory, queue, start, end, state);
    state.pending -= end - start;
    start = end;
  }
  queue.length = 0;
  memory.used = 0;
}

/** Builds the `mmsghdr`s for `queue[start, end)` (one socket) and sends them. */
function sendRun(
  memory: SendMemory,
  queue: Outgoing[],
  start: number,
  end: number,
  state: BatchedState,
): void {
  const { vec, iov, names, control, data } = memory;
  // Message k of this run starts at queue[first[k]] and carries segments[k] datagrams.
  const first: number[] = [];
  const segments: number[] = [];
  let k = 0;
  let i = start;
  while (i < end) {
    const head = queue[i];
    const target = encodeTarget(head.to, state.family);
    if (target.refusal !== null) {
      stats.sendDrops.refused++;
      state.onError(target.refusal, "send");
      i++;
      continue;
    }
    let j = i + 1;
    let bytes = head.length;
    if (state.gso) {
      // GSO: equal segments (the last may be shorter), contiguous, to the same target.
      while (
        j < end && j - i < GSO_MAX_SEGMENTS && queue[j].to === head.to &&
        queue[j - 1].length === head.length && queue[j].length <= head.length &&
        queue[j].offset === queue[j - 1].offset + queue[j - 1].length &&
        bytes + queue[j].length <= GSO_MAX_BYTES
      ) {
        bytes += queue[j].length;
        j++;
      }
    }
    names.bytes.set(target.sockaddr.subarray(0, target.length), k * SOCKADDR_BYTES);
    setWord(iov.view, k * IOVEC_BYTES, data.base + head.offset);
    setWord(iov.view, k * IOVEC_BYTES + 8, bytes);
    const m = k * MMSGHDR.bytes;
    vec.view.setUint32(m + MMSGHDR.namelen, target.length, true);
    if (j - i > 1) {
      const c = k * CMSG_SPACE_U16;
      control.view.setUint16(c + CMSG.data, head.length, true);
      setWord(vec.view, m + MMSGHDR.control, control.base + c);
      setWord(vec.view, m + MMSGHDR.controllen, CMSG_SPACE_U16);
    } else {
      setWord(vec.view, m + MMSGHDR.control, 0);
      setWord(vec.view, m + MMSGHDR.controllen, 0);
    }
    first.push(i);
    segments.push(j - i);
    k++;
    i = j;
  }
  let sent = 0;
  while (sent < k) {
    const r = libcSymbols!.sendmmsg(
      state.fd,
      vec.bytes.subarray(sent * MMSGHDR.bytes, k * MMSGHDR.bytes),
      k - sent,
      MSG_DONTWAIT,
    );
    stats.calls.sent++;
    if (r > 0) {
      for (let n = sent; n < sent + r; n++) {
        stats.packets.sent += segments[n];
        if (segments[n] > 1) stats.segmentedSends++;
      }
      sent += r;
      continue;
    }
    const errno = libcErrno!();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) {
      // The socket buffer is full: what is left of this run is lost, as on a congested
      // link; QUIC recovers it.
      for (let n = sent; n < k; n++) stats.sendDrops.would_block += segments[n];
      return;
    }
    if (segments[sent] > 1 && state.gso) {
      // No segmentation offload on this route: send these datagrams one by one from now on.
      state.gso = false;
      sendRun(memory, queue, first[sent], end, state);
      return;
    }
    stats.sendDrops.error += segments[sent];
    state.onError(new Error(`sendmmsg failed: errno ${errno}`), "send");
    sent++;
  }
}

/** Sets a socket buffer, forced past the sysctl cap when privileged; returns what is in force. */
function raiseBuffer(
  libc: LibcSymbols,
  fd: number,
  option: number,
  force: number,
  bytes: number,
): number {
  // Passed straight to synchronous calls (no stored pointer), so a small array is safe here.
  const value = new Int32Array([Math.min(bytes, 0x7fff_ffff)]);
  if (libc.setsockopt(fd, SOL_SOCKET, force, value, 4) !== 0) {
    libc.setsockopt(fd, SOL_SOCKET, option, value, 4);
  }
  const length = new Uint32Array([4]);
  if (libc.getsockopt(fd, SOL_SOCKET, option, value, length) !== 0) return 0;
  return value[0];
}

/**
 * The descriptor behind a socket Deno opened: the one UDP socket bound to exactly this
 * address (without SO_REUSEPORT, a bound address names one socket).
 */
function findDescriptor(libc: LibcSymbols, addr: Deno.NetAddr, family: number): number {
  const wanted = new Uint8Array(SOCKADDR_BYTES);
  const wantedLength = encodeSockaddr(addr.hostname, addr.port, family, wanted);
  // Passed straight to synchronous calls (no stored pointer), so small arrays are safe here.
  const name = new Uint8Array(SOCKADDR_BYTES);
  const length = new Uint32Array(1);
  const type = new Int32Array(1);
  // Family and port, then the address (IPv6: bytes 8..24; flow info and scope may differ).
  const ranges = family === AF_INET ? [[0, 8]] : [[0, 4], [8, 24]];
  // A new socket takes the lowest free descriptor, so the search is short; descriptors in
  // use by other threads and closed ones leave gaps, hence no stop at the first failure.
  for (let fd = 3; fd < 1 << 20; fd++) {
    length[0] = SOCKADDR_BYTES;
    if (libc.getsockname(fd, name, length) !== 0 || length[0] !== wantedLength) continue;
    const same = ranges.every(([from, to]) => {
      for (let b = from; b < to; b++) if (name[b] !== wanted[b]) return false;
      return true;
    });
    if (!same) continue;
    length[0] = 4;
    if (libc.getsockopt(fd, SOL_SOCKET, SO_TYPE, type, length) === 0 && type[0] === SOCK_DGRAM) {
      return fd;
    }
  }
  return -1;
}

/** What the batched socket asks of the kernel and whom it tells when it got less. */
export interface BatchedSocketSettings {
  /** Receive and send buffer size to ask for. */
  bufferBytes: number;
  /** Told when the kernel granted less (then forgotten: one warning per process). */
  warn?: (message: string, fields: Record<string, unknown>) => void;
}

/**
 * Serves a socket `Deno.listenDatagram` opened and bound through libc: reads in batches
 * after Deno's reactor reports it readable, sends in the process's outgoing batch.
 */
export function openBatchedSocket(
  conn: Deno.DatagramConn,
  options: UdpSocketOptions,
  libc: LibcSymbols,
  errno: () => number,
  settings: BatchedSocketSettings,
): UdpSocket {
  libcSymbols = libc;
  libcErrno = errno;
  const { onPacket, onError = () => {}, sendBufferBytes = 2048, receiveBytes = 65_536 } = options;
  const addr = conn.addr as Deno.NetAddr;
  const family = addr.hostname.includes(":") ? AF_INET6 : AF_INET;
  const fd = findDescriptor(libc, addr, family);
  if (fd < 0) {
    conn.close();
    throw new Error(
      `batched UDP socket: no descriptor found for ${
        formatHostPort({ host: addr.hostname, port: addr.port })
      }`,
    );
  }
  const receive = raiseBuffer(libc, fd, SO_RCVBUF, SO_RCVBUFFORCE, settings.bufferBytes);
  const send = raiseBuffer(libc, fd, SO_SNDBUF, SO_SNDBUFFORCE, settings.bufferBytes);
  stats.bufferBytes.receive = receive;
  stats.bufferBytes.send = send;
  // The kernel reports twice what it granted (its bookkeeping share).
  if (receive < 2 * settings.bufferBytes || send < 2 * settings.bufferBytes) {
    const warn = settings.warn;
    settings.warn = undefined;
    warn?.("UDP socket buffers are smaller than udp.buffer_bytes: raise the kernel's cap", {
      asked: settings.bufferBytes,
      receive: receive / 2,
      send: send / 2,
      sysctl: "net.core.rmem_max, net.core.wmem_max",
    });
  }
  libc.setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, new Int32Array([1]), 4);

  // Allocated now, so that a failure shows at start rather than in the read loop.
  receiveArena();
  const state: BatchedState = {
    fd,
    family,
    open: true,
    pending: 0,
    gso: true,
    onError,
    overflow: 0,
  };
  const firstBuffer = new Uint8Array(receiveBytes);
  const decode = createSockaddrDecoder();
  const arena = sendArena();
  let reserved = -1;

  /** Takes what the socket holds, in batches, after Deno's reactor woke us. */
  function drain(): void {
    const memory = receiveArena();
    const { vec, names, data } = memory;
    for (let call = 0; call < RECEIVE_CALLS_PER_WAKE && state.open; call++) {
      const n = libc.recvmmsg(fd, vec.bytes, RECEIVE_BATCH, MSG_DONTWAIT, 0n);
      stats.calls.received++;
      if (n < 0) {
        const e = errno();
        if (e === EINTR) continue;
        if (e !== EAGAIN) onError(new Error(`recvmmsg failed: errno ${e}`), "receive");
        return;
      }
      for (let i = 0; i < n && state.open; i++) {
        const m = i * MMSGHDR.bytes;
        const length = vec.view.getUint32(m + MMSGHDR.len, true);
        const flags = vec.view.getInt32(m + MMSGHDR.flags, true);
        const from = decode(names.bytes.subarray(i * SOCKADDR_BYTES), names.view);
        stats.packets.received++;
        if ((flags & MSG_TRUNC) !== 0) stats.truncated++;
        else {
          deliver(
            onPacket,
            onError,
            data.bytes.subarray(i * RECEIVE_SLOT, i * RECEIVE_SLOT + length),
            from,
          );
        }
      }
      if (n > 0) readOverflow(memory, n - 1);
      // The kernel rewrote the lengths it was given: restore them for the next call.
      for (let i = 0; i < n; i++) {
        const m = i * MMSGHDR.bytes;
        vec.view.setUint32(m + MMSGHDR.namelen, SOCKADDR_BYTES, true);
        setWord(vec.view, m + MMSGHDR.controllen, CMSG_SPACE_U32);
      }
      if (n < RECEIVE_BATCH) return;
    }
  }

  /** Reads the kernel's drop count from datagram `i`'s control message, when there is one. */
  function readOverflow(memory: ReceiveMemory, i: number): void {
    const controlLength = memory.vec.view.getUint32(i * MMSGHDR.bytes + MMSGHDR.controllen, true);
    if (controlLength < CMSG_LEN_U32) return;
    const c = i * CMSG_SPACE_U32;
    const view = memory.control.view;
    if (view.getInt32(c + CMSG.level, true) !== SOL_SOCKET) return;
    if (view.getInt32(c + CMSG.type, true) !== SO_RXQ_OVFL) return;
    const total = view.getUint32(c + CMSG.data, true);
    if (total > state.overflow) stats.kernelDrops += total - state.overflow;
    state.overflow = total;
  }

  async function readLoop(): Promise<void> {
    while (state.open) {
      let data: Uint8Array;
      let from: Deno.Addr;
      try {
        // Deno's reactor tells us the socket is readable and hands over the first datagram.
        [data, from] = await conn.receive(firstBuffer);
      } catch (error) {
        if (!state.open || error instanceof Deno.errors.BadResource) return;
        onError(error, "receive");
        continue;
      }
      stats.packets.received++;
      stats.calls.received++;
      deliver(onPacket, onError, data, from as Deno.NetAddr);
      drain();
    }
  }

  const closed = readLoop();
  return {
    addr,
    kind: "batched",
    sendBuffer() {
      reserved = reserve(sendBufferBytes);
      return arena.data.bytes.subarray(reserved, reserved + sendBufferBytes);
    },
    commit(length, to) {
      if (!state.open || reserved < 0) return;
      // A flush in between (another socket filled the queue) would have moved the offset.
      if (reserved !== arena.used) {
        arena.data.bytes.copyWithin(arena.used, reserved, reserved + length);
      }
      reserved = -1;
      queueOutgoing(state, length, to);
    },
    send(data, to) {
      if (!state.open) return;
      const offset = reserve(data.length);
      arena.data.bytes.set(data, offset);
      queueOutgoing(state, data.length, to);
    },
    get pendingSends() {
      return state.pending;
    },
    close() {
      if (!state.open) return;
      // A CONNECTION_CLOSE queued just now must leave before the descriptor goes.
      flushSends();
      state.open = false;
      conn.close();
    },
    closed,
  };
}
