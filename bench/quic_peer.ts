/**
 * What a Deno user would pick instead of our endpoint: `@matrixai/quic`'s high-level
 * `QUICServer`/`QUICClient`, one bidirectional stream echoing for a fixed time, client and
 * server in this process (as the issue's reference figure was taken). Exported for
 * `bench/peers.ts`; runnable alone.
 *
 * @module
 */
import { createHmac, randomBytes } from "node:crypto";
import quic from "@matrixai/quic";
import { createCa, createRelayCertificate } from "../shared/identity/dev_ca.ts";

/** Echoes over one stream for `seconds`; resolves with the echoed throughput. */
export async function measureMatrixaiStreamEcho(seconds = 5): Promise<{ mbytes_per_s: number }> {
  const ca = await createCa();
  const cert = await createRelayCertificate(ca);
  const key = new Uint8Array(randomBytes(32)).buffer;
  const server = new quic.QUICServer({
    crypto: {
      key,
      ops: {
        sign: (k: ArrayBuffer, data: ArrayBuffer) =>
          Promise.resolve(
            createHmac("sha256", Buffer.from(k)).update(Buffer.from(data)).digest()
              .buffer as ArrayBuffer,
          ),
        verify: (k: ArrayBuffer, data: ArrayBuffer, sig: ArrayBuffer) =>
          Promise.resolve(
            createHmac("sha256", Buffer.from(k)).update(Buffer.from(data)).digest().equals(
              Buffer.from(sig),
            ),
          ),
      },
    },
    config: { key: cert.key, cert: cert.cert, verifyPeer: false },
  });
  const echo = (stream: { readable: ReadableStream; writable: WritableStream }) => {
    stream.readable.pipeTo(stream.writable).catch(() => {});
  };
  const seen = new WeakSet<object>();
  // The server's stream event for a client's first stream can fire before the connection
  // event (PLATFORM.md), so streams are also picked up from the connection's stream map.
  server.addEventListener("EventQUICServerConnection", (event: Event) => {
    const conn = (event as CustomEvent).detail;
    const adopt = (stream: { readable: ReadableStream; writable: WritableStream }) => {
      if (seen.has(stream)) return;
      seen.add(stream);
      echo(stream);
    };
    conn.addEventListener(
      "EventQUICConnectionStream",
      (e: Event) => adopt((e as CustomEvent).detail),
    );
    for (const stream of conn.streamMap?.values?.() ?? []) adopt(stream);
  });
  await server.start({ host: "127.0.0.1", port: 0 });
  const client = await quic.QUICClient.createQUICClient({
    host: "127.0.0.1",
    port: server.port,
    localHost: "127.0.0.1",
    crypto: {
      ops: {
        randomBytes: (data: ArrayBuffer) =>
          Promise.resolve(void crypto.getRandomValues(new Uint8Array(data))),
      },
    },
    config: { verifyPeer: false },
  });
  try {
    const stream = client.connection.newStream();
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    const chunk = new Uint8Array(16_384);
    const deadline = performance.now() + seconds * 1000;
    let echoed = 0;
    let written = 0;
    const started = performance.now();
    const reading = (async () => {
      while (performance.now() < deadline + 2000) {
        const { value, done } = await reader.read();
        if (done || value === undefined) return;
        echoed += value.length;
        if (echoed >= written && performance.now() >= deadline) return;
      }
    })();
    while (performance.now() < deadline) {
      // Keep at most 256 KiB in flight so the measure is throughput, not buffering.
      if (written - echoed > 262_144) {
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      await writer.write(chunk);
      written += chunk.length;
    }
    await Promise.race([reading, new Promise((r) => setTimeout(r, 3000))]);
    const elapsed = (performance.now() - started) / 1000;
    return { mbytes_per_s: Number((echoed / elapsed / 1e6).toFixed(2)) };
  } finally {
    await client.destroy({ force: true }).catch(() => {});
    await server.stop({ force: true }).catch(() => {});
  }
}

if (import.meta.main) {
  console.log(JSON.stringify(await measureMatrixaiStreamEcho(Number(Deno.args[0] ?? 5))));
  Deno.exit(0);
}
