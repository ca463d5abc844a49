/**
 * Run by udp_socket_test.ts with `--allow-net` naming one destination: sends one datagram
 * there and one to another port through the batched socket, and prints what each did.
 */
import { openUdpSocket, udpChoice, udpTarget } from "../udp_socket.ts";

const [allowed, denied] = Deno.args.map(Number);
const errors: string[] = [];
const socket = openUdpSocket({
  host: "127.0.0.1",
  port: 0,
  onPacket() {},
  onError: (error) => void errors.push((error as Error).name),
});
socket.send(new Uint8Array([1]), udpTarget("127.0.0.1", allowed));
socket.send(new Uint8Array([2]), udpTarget("127.0.0.1", denied));
await new Promise((r) => setTimeout(r, 50));
socket.close();
console.log(JSON.stringify({ kind: udpChoice().kind, errors }));
