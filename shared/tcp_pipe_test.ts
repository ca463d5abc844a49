import assert from "node:assert/strict";
import type { QuicConnection } from "./quic/mod.ts";
import type { StreamRead } from "./quic/connection.ts";
import { type PipeEnd, pipeStreamSocket } from "./tcp_pipe.ts";
import { StreamCode } from "./protocol/stream_header.ts";

/** A stream of a fake connection: what the peer sent, and what the pipe wrote. */
interface FakeStream {
  conn: QuicConnection;
  /** Makes `bytes` (and optionally the FIN) readable. */
  deliver(bytes: Uint8Array, fin?: boolean): void;
  written: number[];
  wroteFin: boolean;
  /** Every `streamWrite` that carried the FIN, with its byte count. */
  finWrites: number[];
  resetCode: number | null;
}

function fakeStream(): FakeStream {
  let incoming: number[] = [];
  let finPending = false;
  let finRead = false;
  const stream: FakeStream = {
    conn: {
      closed: false,
      streamRead(_id: number, buffer: Uint8Array): StreamRead | null {
        if (finRead || (incoming.length === 0 && !finPending)) return null;
        const n = Math.min(buffer.length, incoming.length);
        buffer.set(incoming.slice(0, n));
        incoming = incoming.slice(n);
        const fin = finPending && incoming.length === 0;
        if (fin) finRead = true;
        return { bytes: n, fin };
      },
      streamWrite(_id: number, data: Uint8Array, fin = false): number {
        stream.written.push(...data);
        if (fin) {
          stream.wroteFin = true;
          stream.finWrites.push(data.length);
        }
        return data.length;
      },
      streamReset(_id: number, code: number): void {
        stream.resetCode = code;
      },
    } as unknown as QuicConnection,
    deliver(bytes, fin = false) {
      incoming.push(...bytes);
      finPending ||= fin;
    },
    written: [],
    wroteFin: false,
    finWrites: [],
    resetCode: null,
  };
  return stream;
}

function chunk(payload: string): Uint8Array {
  const body = new TextEncoder().encode(payload);
  return new Uint8Array([body.length >> 8, body.length & 0xff, ...body]);
}

/** A connected loopback socket pair: `[pipe side, test side]`. */
async function socketPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const client = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  return [await accepted, client];
}

async function readToEnd(conn: Deno.TcpConn): Promise<string> {
  const parts: Uint8Array[] = [];
  const buffer = new Uint8Array(1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    parts.push(buffer.slice(0, n));
  }
  return new TextDecoder().decode(new Uint8Array(parts.flatMap((p) => [...p])));
}

function waitEnd(): { promise: Promise<PipeEnd>; onEnd(end: PipeEnd): void } {
  let onEnd!: (end: PipeEnd) => void;
  const promise = new Promise<PipeEnd>((resolve) => onEnd = resolve);
  return { promise, onEnd };
}

Deno.test("pipeStreamSocket() carries chunks both ways and ends the data with an end chunk on the FIN", async () => {
  const stream = fakeStream();
  const [socket, peer] = await socketPair();
  const ended = waitEnd();
  const pipe = pipeStreamSocket({ conn: stream.conn, streamId: 4, socket, onEnd: ended.onEnd });
  // Two chunks split at odd places, then the end chunk with the FIN: the socket half-closes.
  const bytes = new Uint8Array([...chunk("hello "), ...chunk("world"), 0, 0]);
  stream.deliver(bytes.subarray(0, 3));
  pipe.readable();
  stream.deliver(bytes.subarray(3), true);
  pipe.readable();
  assert.equal(await readToEnd(peer), "hello world");
  // The socket's own side still flows after the half-close; its EOF becomes the end chunk.
  await peer.write(new TextEncoder().encode("reply"));
  await peer.closeWrite();
  const end = await ended.promise;
  peer.close();
  assert.deepEqual(end, {
    reason: "complete",
    toStream: 5,
    toSocket: 11,
    chunksToStream: 1,
    chunksToSocket: 2,
  });
  assert.deepEqual(stream.written, [...chunk("reply"), 0, 0]);
  // The FIN left together with the end chunk's bytes, never alone.
  assert.deepEqual(stream.finWrites, [2]);
  assert.equal(stream.resetCode, null);
});

Deno.test("pipeStreamSocket() resets the stream when the FIN cuts a chunk short", async () => {
  const stream = fakeStream();
  const [socket, peer] = await socketPair();
  const ended = waitEnd();
  const pipe = pipeStreamSocket({ conn: stream.conn, streamId: 4, socket, onEnd: ended.onEnd });
  stream.deliver(chunk("truncated").subarray(0, 6), true);
  pipe.readable();
  const end = await ended.promise;
  assert.equal(end.reason, "protocol_violation");
  assert.equal(stream.resetCode, StreamCode.PROTOCOL_VIOLATION);
  // The cut chunk is dropped and the socket closed.
  assert.equal(await readToEnd(peer), "");
  peer.close();
});

Deno.test("pipeStreamSocket() resets the stream when data follows the end chunk", async () => {
  const stream = fakeStream();
  const [socket, peer] = await socketPair();
  const ended = waitEnd();
  const pipe = pipeStreamSocket({ conn: stream.conn, streamId: 4, socket, onEnd: ended.onEnd });
  stream.deliver(new Uint8Array([...chunk("ok"), 0, 0, 0x41]), true);
  pipe.readable();
  const end = await ended.promise;
  assert.equal(end.reason, "protocol_violation");
  assert.equal(stream.resetCode, StreamCode.PROTOCOL_VIOLATION);
  peer.close();
});

Deno.test("pipeStreamSocket() takes a FIN between chunks as the end of the data", async () => {
  const stream = fakeStream();
  const [socket, peer] = await socketPair();
  const ended = waitEnd();
  const pipe = pipeStreamSocket({ conn: stream.conn, streamId: 4, socket, onEnd: ended.onEnd });
  stream.deliver(chunk("bye"), true);
  pipe.readable();
  assert.equal(await readToEnd(peer), "bye");
  await peer.closeWrite();
  assert.equal((await ended.promise).reason, "complete");
  peer.close();
});
