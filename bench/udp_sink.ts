/**
 * The benchmarks' UDP backend, run inside the bench process: counts datagrams per step
 * (from the `u32 step` that {@linkcode ./udp_load.ts} writes first) and, in echo mode,
 * sends each one back to its source.
 *
 * @module
 */
import { openUdpSocket } from "../shared/quic/udp_socket.ts";
import { HEADER_BYTES } from "./udp_load.ts";

/** A counting (and optionally echoing) UDP backend. */
export interface UdpSink {
  readonly port: number;
  /** Datagrams received for `step` so far. */
  count(step: number): number;
  /** Bytes received for all steps so far. */
  readonly bytes: number;
  /** Datagrams received so far, of any size. */
  readonly packets: number;
  /** Whether received datagrams are sent back. */
  echo: boolean;
  /** Forgets the per-step counts (before a new series, whose steps start at 0 again). */
  reset(): void;
  close(): Promise<void>;
}

/**
 * Binds a sink on 127.0.0.1 (ephemeral port), on the product's socket layer (batched where
 * it can run), so that the sink is never what limits a measurement.
 */
export function startUdpSink(echo = false): UdpSink {
  const counts = new Map<number, number>();
  let bytes = 0;
  let packets = 0;
  const socket = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    sendBufferBytes: 9000,
    onPacket(data, from) {
      bytes += data.length;
      packets++;
      if (data.length >= HEADER_BYTES) {
        const step = new DataView(data.buffer, data.byteOffset).getUint32(0);
        counts.set(step, (counts.get(step) ?? 0) + 1);
      }
      if (sink.echo) socket.send(data, from);
    },
  });
  const sink: UdpSink = {
    port: socket.addr.port,
    count: (step) => counts.get(step) ?? 0,
    get bytes() {
      return bytes;
    },
    get packets() {
      return packets;
    },
    echo,
    reset: () => counts.clear(),
    async close() {
      socket.close();
      await socket.closed;
    },
  };
  return sink;
}
