/**
 * The echo end of `bench:wake`: answers every datagram on `127.0.0.1:<port>`, waiting for the
 * next one the way `<mode>` says:
 *
 * - `batched`, `portable`: the product's two socket kinds (`shared/quic/udp_socket.ts`);
 * - `poll`: the alternative the batched socket does not use, a blocking `poll` on Deno's
 *   thread pool (an FFI `nonblocking` call), then `recvfrom`/`sendto` through libc.
 *
 * Usage: `deno run --allow-net=127.0.0.1 --allow-ffi bench/wake_echo.ts <mode> <port>`.
 *
 * @module
 */
import { libcPath } from "../shared/quic/libc.ts";
import { openUdpSocket } from "../shared/quic/udp_socket.ts";

const [mode, portText] = Deno.args;
const port = Number(portText);

if (mode === "poll") {
  const libc = Deno.dlopen(libcPath()!, {
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
    recvfrom: { parameters: ["i32", "buffer", "u64", "i32", "buffer", "buffer"], result: "i64" },
    sendto: { parameters: ["i32", "buffer", "u64", "i32", "buffer", "u32"], result: "i64" },
  });
  // Every struct in one large buffer: small typed arrays move on the V8 heap.
  const memory = new ArrayBuffer(8192);
  const view = new DataView(memory);
  const address = new Uint8Array(memory, 0, 16);
  const from = new Uint8Array(memory, 32, 16);
  const fromLength = new Uint8Array(memory, 48, 4);
  const pollFd = new Uint8Array(memory, 64, 8);
  const data = new Uint8Array(memory, 4096, 2048);
  const fd = libc.symbols.socket(2, 2 | 0o4000, 0); // AF_INET, SOCK_DGRAM | SOCK_NONBLOCK
  view.setUint16(0, 2, true);
  view.setUint16(2, port);
  address.set([127, 0, 0, 1], 4);
  if (libc.symbols.bind(fd, address, 16) !== 0) throw new Error("bind failed");
  view.setInt32(64, fd, true);
  view.setInt16(68, 1, true); // POLLIN
  console.log(JSON.stringify({ msg: "ready" }));
  for (;;) {
    await libc.symbols.poll(pollFd, 1n, 1000);
    for (;;) {
      view.setUint32(48, 16, true);
      const n = libc.symbols.recvfrom(fd, data, 2048n, 0x40, from, fromLength);
      if (n < 0) break;
      libc.symbols.sendto(fd, data, BigInt(n), 0, from, 16);
    }
  }
} else {
  const socket = openUdpSocket({
    host: "127.0.0.1",
    port,
    kind: mode as "batched" | "portable",
    onPacket: (data, from) => socket.send(data, from),
  });
  console.log(JSON.stringify({ msg: "ready", kind: socket.kind }));
}
