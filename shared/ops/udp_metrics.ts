/**
 * The UDP socket layer's figures as metrics, read at scrape time from
 * {@linkcode udpStats}: which socket kind runs, the buffer sizes in force, datagrams and
 * system calls each way (their ratio is the batch size), and every datagram lost at the socket.
 *
 * @module
 */
import { Counter, Gauge, type Registry } from "prom-client";
import { udpChoice, udpStats } from "../quic/udp_socket.ts";

/** Registers `<prefix>udp_*` on `registry`. */
export function registerUdpMetrics(registry: Registry, prefix: string): void {
  const registers = [registry];
  new Gauge({
    name: `${prefix}udp_socket_info`,
    help: "1 for the UDP socket kind in use (batched: recvmmsg/sendmmsg via libc; portable).",
    labelNames: ["kind"],
    registers,
    collect() {
      this.reset();
      this.set({ kind: udpChoice().kind }, 1);
    },
  });
  new Gauge({
    name: `${prefix}udp_socket_buffer_bytes`,
    help: "Socket buffer size in force as the kernel reports it (twice the size granted; " +
      "0 on the portable socket, which cannot read it), by direction.",
    labelNames: ["direction"],
    registers,
    collect() {
      const { receive, send } = udpStats().bufferBytes;
      this.set({ direction: "receive" }, receive);
      this.set({ direction: "send" }, send);
    },
  });
  counter(registers, `${prefix}udp_datagrams_total`, "UDP datagrams, by direction.", () => {
    const { packets } = udpStats();
    return { received: packets.received, sent: packets.sent };
  });
  counter(
    registers,
    `${prefix}udp_syscalls_total`,
    "System calls (or Deno ops) that moved UDP datagrams, by direction; " +
      "datagrams_total / syscalls_total is the batch size.",
    () => {
      const { calls } = udpStats();
      return { received: calls.received, sent: calls.sent };
    },
  );
  counter(
    registers,
    `${prefix}udp_gso_sends_total`,
    "Sends that carried several datagrams in one GSO (UDP_SEGMENT) buffer.",
    () => ({ "": udpStats().segmentedSends }),
    null,
  );
  counter(
    registers,
    `${prefix}udp_send_drops_total`,
    "UDP datagrams not sent, by reason (would_block: send buffer full; refused: outside the " +
      "sandbox or the socket's address family; error: the kernel refused it).",
    () => ({ ...udpStats().sendDrops }),
    "reason",
  );
  counter(
    registers,
    `${prefix}udp_receive_drops_total`,
    "UDP datagrams lost on receipt, by reason (kernel_buffer: the receive buffer was full, " +
      "from SO_RXQ_OVFL; truncated: longer than the receive buffer).",
    () => ({ kernel_buffer: udpStats().kernelDrops, truncated: udpStats().truncated }),
    "reason",
  );
}

/**
 * A counter mirroring totals kept elsewhere: each scrape adds what grew since the last one.
 * `read` gives the totals by value of `label` (by "" when `label` is null).
 */
function counter(
  registers: Registry[],
  name: string,
  help: string,
  read: () => Record<string, number>,
  label: string | null = "direction",
): void {
  const seen = new Map<string, number>();
  new Counter({
    name,
    help,
    labelNames: label === null ? [] : [label],
    registers,
    collect() {
      for (const [key, total] of Object.entries(read())) {
        const delta = total - (seen.get(key) ?? 0);
        seen.set(key, total);
        if (label === null) this.inc(Math.max(0, delta));
        else this.inc({ [label]: key }, Math.max(0, delta));
      }
    },
  });
}
