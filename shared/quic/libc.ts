/**
 * The few libc calls the batched UDP socket needs, through Deno's FFI: `recvmmsg`,
 * `sendmmsg`, `setsockopt`, `getsockopt`, `getsockname` and `errno`.
 *
 * Only Linux on x86_64 and aarch64 is supported: both use the generic socket constants and
 * the LP64 struct layouts written out below. Every other host gets null from
 * {@linkcode openLibc} and uses the portable socket.
 *
 * @module
 */

/** Where glibc lives on the supported hosts, in search order (Debian, Fedora, distroless). */
const LIBC_PATHS: Record<string, string[]> = {
  x86_64: ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6", "/lib64/libc.so.6"],
  aarch64: ["/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6", "/lib64/libc.so.6"],
};

// Addresses travel as plain integers ("usize"), never as Deno pointer objects: the pointer
// API demands unscoped --allow-ffi, and a component's grant names only this library.
const SYMBOLS = {
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "usize"], result: "i32" },
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "usize" },
  /** `memmove(buffer, buffer, 0)` returns its first argument: the address of a buffer. */
  addressOf: { name: "memmove", parameters: ["buffer", "buffer", "usize"], result: "usize" },
  /** `memcpy(out, address, n)`: reads memory at an address (errno). */
  readAt: { name: "memcpy", parameters: ["buffer", "usize", "usize"], result: "usize" },
} as const;

/** The loaded library's symbols. */
export type LibcSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** An opened libc, or why it could not be used. */
export type LibcResult =
  | {
    ok: true;
    path: string;
    symbols: LibcSymbols;
    errno: () => number;
    /** The address of `buffer`'s first byte (stable for buffers over 64 bytes). */
    addressOf: (buffer: Uint8Array) => bigint;
  }
  | { ok: false; reason: string };

/** Socket constants (Linux, generic ABI). */
export const SOL_SOCKET = 1;
/** `SO_TYPE`: the socket's type. */
export const SO_TYPE = 3;
/** `SO_SNDBUF`: the send buffer size (the kernel doubles what is asked). */
export const SO_SNDBUF = 7;
/** `SO_RCVBUF`: the receive buffer size (the kernel doubles what is asked). */
export const SO_RCVBUF = 8;
/** `SO_SNDBUFFORCE`: `SO_SNDBUF` beyond `net.core.wmem_max` (CAP_NET_ADMIN). */
export const SO_SNDBUFFORCE = 32;
/** `SO_RCVBUFFORCE`: `SO_RCVBUF` beyond `net.core.rmem_max` (CAP_NET_ADMIN). */
export const SO_RCVBUFFORCE = 33;
/** `SO_RXQ_OVFL`: a control message with the socket's count of datagrams dropped on a full buffer. */
export const SO_RXQ_OVFL = 40;
/** `SOCK_DGRAM`. */
export const SOCK_DGRAM = 2;
/** `SOL_UDP`. */
export const SOL_UDP = 17;
/** `UDP_SEGMENT`: generic segmentation offload, the segment size of one large send. */
export const UDP_SEGMENT = 103;
/** `MSG_DONTWAIT`. */
export const MSG_DONTWAIT = 0x40;
/** `MSG_TRUNC` in `msg_flags`: the datagram was longer than its buffer. */
export const MSG_TRUNC = 0x20;
/** `EAGAIN`. */
export const EAGAIN = 11;
/** `EINTR`. */
export const EINTR = 4;
/** `AF_INET`. */
export const AF_INET = 2;
/** `AF_INET6`. */
export const AF_INET6 = 10;

/** LP64 layout: `struct iovec { void *base; size_t len; }`. */
export const IOVEC_BYTES = 16;
/** LP64 layout of `struct mmsghdr` (a `struct msghdr` and `unsigned msg_len`). */
export const MMSGHDR = {
  bytes: 64,
  name: 0,
  namelen: 8,
  iov: 16,
  iovlen: 24,
  control: 32,
  controllen: 40,
  flags: 48,
  len: 56,
} as const;
/** LP64 layout of `struct cmsghdr`: `size_t len; int level; int type;` then the data. */
export const CMSG = { len: 0, level: 8, type: 12, data: 16 } as const;
/** `CMSG_SPACE(4)`: one control message holding a 32-bit value. */
export const CMSG_SPACE_U32 = 24;
/** `CMSG_LEN(4)`. */
export const CMSG_LEN_U32 = 20;
/** `CMSG_SPACE(2)`: one control message holding a 16-bit value (`UDP_SEGMENT`). */
export const CMSG_SPACE_U16 = 24;
/** `CMSG_LEN(2)`. */
export const CMSG_LEN_U16 = 18;
/** Bytes reserved per address: `sizeof(struct sockaddr_in6)` rounded up. */
export const SOCKADDR_BYTES = 32;

/** The libc path this host would load, or null when the batched socket cannot run here. */
export function libcPath(): string | null {
  if (Deno.build.os !== "linux") return null;
  const found = (LIBC_PATHS[Deno.build.arch] ?? []).find(exists);
  if (found !== undefined) return found;
  // Without read access the paths cannot be probed; the first is where Debian has it.
  return LIBC_PATHS[Deno.build.arch]?.[0] ?? null;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    // Not here, or not readable.
    return false;
  }
}

let opened: LibcResult | undefined;

/**
 * Opens libc once per process. Fails (with the reason, for the startup log line) on other
 * operating systems and architectures, and when the sandbox does not grant `--allow-ffi`
 * for the libc path.
 */
export function openLibc(): LibcResult {
  if (opened !== undefined) return opened;
  const candidates = Deno.build.os === "linux" ? LIBC_PATHS[Deno.build.arch] ?? [] : [];
  if (candidates.length === 0) {
    opened = { ok: false, reason: `no batched UDP on ${Deno.build.os}/${Deno.build.arch}` };
    return opened;
  }
  // A sandboxed component cannot stat the candidates; the one its --allow-ffi names is it.
  const granted = candidates.filter((candidate) =>
    Deno.permissions.querySync({ name: "ffi", path: candidate }).state === "granted"
  );
  const path = granted.find(exists) ?? granted[0];
  if (path === undefined) {
    opened = { ok: false, reason: `--allow-ffi does not include ${libcPath()}` };
    return opened;
  }
  try {
    const library = Deno.dlopen(path, SYMBOLS);
    const { symbols } = library;
    // errno is thread-local; synchronous FFI calls run on this (the main) thread, so its
    // address is fixed for the process.
    const errnoAddress = symbols.__errno_location();
    const errnoValue = new Int32Array(1);
    opened = {
      ok: true,
      path,
      symbols,
      errno() {
        symbols.readAt(errnoValue, errnoAddress, 4n);
        return errnoValue[0];
      },
      addressOf: (buffer) => BigInt(symbols.addressOf(buffer, buffer, 0n)),
    };
  } catch (error) {
    opened = { ok: false, reason: `cannot load ${path}: ${(error as Error).message}` };
  }
  return opened;
}
