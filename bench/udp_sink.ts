/**
 * The benchmarks' UDP backend, run inside the bench process: counts datagrams per step
 * (from the `u32 step` that {@linkcode ./udp_load.ts} writes first) and, in echo mode,
 * sends each one back to its source.
 *
 * @module
 */
import { HEADER_BYTES } from "./udp_load.ts";

/** A counting (and optionally echoing) UDP backend. */
export interface UdpSink {
  readonly port: number;
  /** Datagrams received for `step` so far. */
  count(step: number): number;
  /** Bytes received for all steps so far. */
  readonly bytes: number;
  /** Whether received datagrams are sent back. */
  echo: boolean;
  /** Forgets the per-step counts (before a new series, whose steps start at 0 again). */
  reset(): void;
  close(): Promise<void>;
}

/** Binds a sink on 127.0.0.1 (ephemeral port). */
export function startUdpSink(echo = false): UdpSink {
  const conn = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const counts = new Map<number, number>();
  const buffer = new Uint8Array(65_536);
  // An echo owns its buffer until the send completes.
  const ring = Array.from({ length: 2048 }, () => new Uint8Array(9000));
  let ringIndex = 0;
  let bytes = 0;
  let open = true;
  const sink: UdpSink = {
    port: (conn.addr as Deno.NetAddr).port,
    count: (step) => counts.get(step) ?? 0,
    get bytes() {
      return bytes;
    },
    echo,
    reset: () => counts.clear(),
    async close() {
      open = false;
      conn.close();
      await loop;
    },
  };
  const loop = (async () => {
    while (open) {
      let data: Uint8Array;
      let from: Deno.Addr;
      try {
        [data, from] = await conn.receive(buffer);
      } catch {
        return;
      }
      bytes += data.length;
      if (data.length >= HEADER_BYTES) {
        const step = new DataView(data.buffer, data.byteOffset).getUint32(0);
        counts.set(step, (counts.get(step) ?? 0) + 1);
      }
      if (sink.echo) {
        const out = data.length <= 9000 ? ring[ringIndex] : new Uint8Array(data.length);
        ringIndex = (ringIndex + 1) % ring.length;
        out.set(data);
        conn.send(out.subarray(0, data.length), from).catch(() => {});
      }
    }
  })();
  return sink;
}
