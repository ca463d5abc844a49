/**
 * The demo backend of `deno task dev`: a UDP echo service.
 *
 * Usage: `deno run --allow-net=127.0.0.1 tools/echo_service.ts [host:port]` (default
 * 127.0.0.1:0). Prints one JSON line with the bound address, then echoes every datagram.
 *
 * @module
 */
import { parseHostPort } from "../shared/config/address.ts";
import { openUdpSocket, udpTarget } from "../shared/udp_socket.ts";

if (import.meta.main) {
  const { host, port } = parseHostPort(Deno.args[0] ?? "127.0.0.1:0");
  const socket = openUdpSocket({
    host,
    port,
    onPacket: (data, from) => socket.send(data, udpTarget(from.hostname, from.port)),
  });
  console.log(JSON.stringify({ msg: "echo service ready", udp: `${host}:${socket.addr.port}` }));
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      socket.close();
      Deno.exit(0);
    });
  }
}
