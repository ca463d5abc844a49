/**
 * Sends UDP datagrams to an address and prints the replies: the quickest way to try a
 * service through the agent's local port.
 *
 * Usage: `deno task probe udp://127.0.0.1:5300 [message] [--count N] [--timeout-ms MS]`.
 * Exits 0 when every datagram was answered, 1 otherwise.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseServiceUrl } from "../shared/config/address.ts";

if (import.meta.main) {
  const { positionals, values } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      count: { type: "string", default: "1" },
      "timeout-ms": { type: "string", default: "2000" },
    },
  });
  let target;
  try {
    target = parseServiceUrl(positionals[0] ?? "");
  } catch (error) {
    console.error(`usage: deno task probe udp://host:port [message]: ${(error as Error).message}`);
    Deno.exit(2);
  }
  const count = Number(values.count);
  const timeoutMs = Number(values["timeout-ms"]);
  const message = positionals[1] ?? "hello through ztna-edge";
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: target.host.includes(":") ? "::" : "0.0.0.0",
    port: 0,
  });
  const to = { transport: "udp" as const, hostname: target.host, port: target.port };
  let answered = 0;
  // One receive stays pending across a timeout: a socket allows one receive at a time.
  let pending: Promise<[Uint8Array, Deno.Addr]> | null = null;
  for (let i = 0; i < count; i++) {
    const sent = performance.now();
    await socket.send(new TextEncoder().encode(message), to);
    let timer: ReturnType<typeof setTimeout> | undefined;
    pending ??= socket.receive();
    const reply = await Promise.race([
      pending,
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (reply !== null) pending = null;
    if (reply === null) {
      console.log(`no reply within ${timeoutMs} ms`);
      continue;
    }
    answered++;
    const rtt = (performance.now() - sent).toFixed(2);
    console.log(
      `reply from ${target.host}:${target.port} in ${rtt} ms: ${
        new TextDecoder().decode(reply[0])
      }`,
    );
  }
  pending?.catch(() => {});
  socket.close();
  Deno.exit(answered === count ? 0 : 1);
}
