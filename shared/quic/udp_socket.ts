/**
 * Bound UDP sockets of two kinds, chosen once per process: **batched**
 * (`batched_socket.ts`: `recvmmsg`/`sendmmsg`/GSO through libc, large buffers; Linux) and
 * **portable** (`portable_socket.ts`: `Deno.listenDatagram` alone). `auto` picks batched
 * where it can run (Linux on x86_64/aarch64, `--allow-ffi` granting libc) and portable
 * elsewhere; the choice is logged at start and exported as `ztna_<component>_udp_socket_info`.
 *
 * Why: per-datagram Deno ops capped a hop at about 2k datagrams/s with loss, and the 212 KiB
 * default receive buffer overflowed in bursts while the process waited for its next receive
 * op (docs/BENCHMARKS.md).
 *
 * @module
 */
import { bindAddress } from "../bind_error.ts";
import { stats, type UdpStats } from "./_udp_common.ts";
import { openBatchedSocket } from "./batched_socket.ts";
import { openLibc } from "./libc.ts";
import { openPortableSocket } from "./portable_socket.ts";

export type { UdpStats } from "./_udp_common.ts";

/** Where a datagram goes: prebuilt once per peer so sends do not allocate addresses. */
export type UdpTarget = Deno.NetAddr;

/** Builds a send target for `host` (an IP literal) and `port`. */
export function udpTarget(host: string, port: number): UdpTarget {
  return { transport: "udp", hostname: host, port };
}

/** Called for every datagram; `data` and `from` are only valid during the call. */
export type PacketHandler = (data: Uint8Array, from: Deno.NetAddr) => void;

/** The two socket implementations. */
export type UdpSocketKind = "batched" | "portable";

/** Process-wide socket settings (config `udp`). */
export interface UdpSettings {
  /** `auto` picks `batched` where it can run, else `portable`. */
  kind: "auto" | UdpSocketKind;
  /** Receive and send buffer size to ask the kernel for (batched sockets). */
  bufferBytes: number;
}

/** The defaults: batched where possible, 4 MiB buffers. */
export const DEFAULT_UDP_SETTINGS: UdpSettings = { kind: "auto", bufferBytes: 4 * 1024 * 1024 };

/** What {@linkcode configureUdpSockets} decided, for the startup log line. */
export interface UdpChoice {
  kind: UdpSocketKind;
  /** Why, when it is `portable`. */
  reason?: string;
  /** The libc loaded, when `batched`. */
  libc?: string;
}

/** The process's counters (live object: read, do not change). */
export function udpStats(): Readonly<UdpStats> {
  return stats;
}

let wanted: UdpSettings["kind"] = DEFAULT_UDP_SETTINGS.kind;
let choice: UdpChoice | undefined;
/** What batched sockets ask the kernel for; `warn` is dropped after its one warning. */
let batched: { bufferBytes: number; warn?: (m: string, f: Record<string, unknown>) => void } = {
  bufferBytes: DEFAULT_UDP_SETTINGS.bufferBytes,
};

/**
 * Sets the socket kind and buffer size for every socket this process opens from now on, and
 * returns the kind in force. Components call it once at start; without a call the defaults
 * apply. `warn` receives the warning about a kernel-capped buffer (once).
 */
export function configureUdpSockets(
  next: UdpSettings,
  warn?: (message: string, fields: Record<string, unknown>) => void,
): UdpChoice {
  wanted = next.kind;
  batched = { bufferBytes: next.bufferBytes, warn };
  choice = undefined;
  return udpChoice();
}

/** The socket kind in force (decided on first use). */
export function udpChoice(): UdpChoice {
  if (choice !== undefined) return choice;
  if (wanted === "portable") {
    choice = { kind: "portable", reason: "configured" };
    return choice;
  }
  const libc = openLibc();
  if (libc.ok) choice = { kind: "batched", libc: libc.path };
  else if (wanted === "batched") {
    throw new Error(`udp.socket is "batched" but ${libc.reason}`);
  } else choice = { kind: "portable", reason: libc.reason };
  return choice;
}

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
   * The largest datagram `sendBuffer` must hold; larger ones go through `send`.
   * @default {2048}
   */
  sendBufferBytes?: number;
  /**
   * Size of the buffer the first datagram after a wait lands in.
   * @default {65536}
   */
  receiveBytes?: number;
  /** Overrides the process's choice (tests of the fallback). */
  kind?: UdpSocketKind;
}

/** A bound UDP socket. */
export interface UdpSocket {
  /** The bound local address (actual port when 0 was asked). */
  readonly addr: Deno.NetAddr;
  /** Which implementation serves it. */
  readonly kind: UdpSocketKind;
  /**
   * Room for one outgoing datagram of up to `sendBufferBytes`, to write in place and then
   * {@linkcode UdpSocket.commit}. Valid until the commit or the next call.
   */
  sendBuffer(): Uint8Array;
  /** Queues the first `length` bytes of the last `sendBuffer()` for `to`. */
  commit(length: number, to: UdpTarget): void;
  /** Sends a copy of `data`; the caller may reuse `data` at once. */
  send(data: Uint8Array, to: UdpTarget): void;
  /** Datagrams queued but not yet handed to the kernel. */
  readonly pendingSends: number;
  /** Hands queued datagrams to the kernel, stops receiving and closes. Idempotent. */
  close(): void;
  /** Resolves when the read loop has ended. */
  readonly closed: Promise<void>;
}

/**
 * Binds a UDP socket of the process's kind and starts its read loop.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { openUdpSocket, udpTarget } from "./udp_socket.ts";
 *
 * let heard = "";
 * const socket = openUdpSocket({
 *   host: "127.0.0.1",
 *   port: 0,
 *   onPacket: (data) => void (heard = new TextDecoder().decode(data)),
 * });
 * socket.send(new TextEncoder().encode("hi"), udpTarget("127.0.0.1", socket.addr.port));
 * for (let i = 0; i < 100 && heard === ""; i++) await new Promise((r) => setTimeout(r, 10));
 * socket.close();
 * await socket.closed;
 * assert.equal(heard, "hi");
 * ```
 *
 * @param options Where to bind, the packet handler, and buffer sizes.
 * @returns The bound socket, reading.
 */
export function openUdpSocket(options: UdpSocketOptions): UdpSocket {
  const conn = bindAddress(
    options.host,
    options.port,
    () => Deno.listenDatagram({ transport: "udp", hostname: options.host, port: options.port }),
  );
  const kind = options.kind ?? udpChoice().kind;
  if (kind === "batched") {
    const libc = openLibc();
    if (!libc.ok) {
      conn.close();
      throw new Error(`batched UDP socket: ${libc.reason}`);
    }
    return openBatchedSocket(conn, options, libc.symbols, libc.errno, batched);
  }
  return openPortableSocket(conn, options);
}
