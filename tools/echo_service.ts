/**
 * The demo backend of `deno task dev`: an echo service over UDP and TCP.
 *
 * Usage: `deno run --allow-net=127.0.0.1 tools/echo_service.ts [host:port]` (default
 * 127.0.0.1:0; TCP binds its own free port). Prints one JSON line with both bound addresses,
 * then echoes every datagram, and every TCP connection's bytes until the client half-closes.
 *
 * @module
 */
import { parseHostPort } from "../shared/config/address.ts";
import { openUdpSocket, udpTarget } from "../shared/quic/udp_socket.ts";

/** Echoes `conn` back to itself, then half-closes after the client's FIN. */
async function echoConnection(conn: Deno.TcpConn): Promise<void> {
  try {
    await conn.readable.pipeTo(conn.writable);
  } catch {
    // The client reset the connection: nothing more to echo.
  }
}

if (import.meta.main) {
  const { host, port } = parseHostPort(Deno.args[0] ?? "127.0.0.1:0");
  const socket = openUdpSocket({
    host,
    port,
    onPacket: (data, from) => socket.send(data, udpTarget(from.hostname, from.port)),
  });
  const listener = Deno.listen({ hostname: host, port: 0 });
  (async () => {
    for await (const conn of listener) echoConnection(conn);
  })();
  console.log(JSON.stringify({
    msg: "echo service ready",
    udp: `${host}:${socket.addr.port}`,
    tcp: `${host}:${(listener.addr as Deno.NetAddr).port}`,
  }));
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      socket.close();
      listener.close();
      Deno.exit(0);
    });
  }
}
