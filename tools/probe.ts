/**
 * Sends a message to an address and prints the replies: the quickest way to try a service
 * through the agent's local port. `udp://` sends datagrams; `tcp://` opens one connection
 * per message, writes it, half-closes and prints everything that comes back.
 *
 * Usage: `deno task probe udp://127.0.0.1:5300 [message] [--count N] [--timeout-ms MS]`
 * (or `tcp://…`). Exits 0 when every message was answered, 1 otherwise.
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
    console.error(
      `usage: deno task probe udp://host:port|tcp://host:port [message]: ${
        (error as Error).message
      }`,
    );
    Deno.exit(2);
  }
  const count = Number(values.count);
  const timeoutMs = Number(values["timeout-ms"]);
  const message = positionals[1] ?? "hello through ztna-edge";
  if (target.protocol === "tcp") {
    let answered = 0;
    for (let i = 0; i < count; i++) {
      const reply = await tcpExchange(target.host, target.port, message, timeoutMs);
      if (reply === null) {
        console.log(`no reply within ${timeoutMs} ms`);
        continue;
      }
      answered++;
      console.log(
        `reply from ${target.host}:${target.port} in ${reply.ms.toFixed(2)} ms: ${reply.text}`,
      );
    }
    Deno.exit(answered === count ? 0 : 1);
  }
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

/**
 * Connects, writes `message`, half-closes and reads to the end (at most `timeoutMs` in all);
 * null when the connection fails, is reset or brings nothing back in time.
 */
async function tcpExchange(
  hostname: string,
  port: number,
  message: string,
  timeoutMs: number,
): Promise<{ text: string; ms: number } | null> {
  const started = performance.now();
  let conn: Deno.TcpConn | undefined;
  const timer = setTimeout(() => conn?.close(), timeoutMs);
  try {
    conn = await Deno.connect({ hostname, port });
    await conn.write(new TextEncoder().encode(message));
    await conn.closeWrite();
    const text = await new Response(conn.readable).text();
    return text.length > 0 ? { text, ms: performance.now() - started } : null;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch {
      // Closed by the timeout or by reading to the end.
    }
  }
}
