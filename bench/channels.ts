/**
 * `deno task bench:channels`: the relay's CPU microseconds per packet forwarded through a
 * channel (issue 14's goal: ≤ 5 µs at 8k/s), measured on a real relay process from
 * `/proc/<pid>/stat` while a test agent sends 1200 B channel packets one way to a test
 * connector at a fixed rate. The relay only rewrites the id and forwards (no crypto), so
 * the opaque packets need not be real QUIC. Compare with `bench:efficiency`, where the relay
 * decrypts and re-encrypts each datagram.
 *
 * Flags: `--count=N` packets per rate (default 40000), `--rate=R` packets/s (default 8000,
 * then 20000).
 *
 * @module
 */
import type { ControlMessage } from "../shared/protocol/control.ts";
import { ChannelPacketType, writeChannelHeader } from "../shared/protocol/channel_packet.ts";
import { udpTarget } from "../shared/quic/udp_socket.ts";
import { closePeers, dialPeer } from "../test/_support/attack_client.ts";
import { portOf, startEchoService } from "../test/_support/harness.ts";
import { startTrio } from "../test/_support/trio.ts";
import { cpuSeconds, progress, round, writeResult } from "./bench_util.ts";

const flag = (name: string, fallback: number) =>
  Number(Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const count = flag("count", 40_000);
const rates = Deno.args.some((a) => a.startsWith("--rate="))
  ? [flag("rate", 8000)]
  : [8000, 20_000];
const SIZE = 1200;

const isType =
  <T extends ControlMessage["type"]>(type: T) =>
  (m: ControlMessage): m is ControlMessage & { type: T } => m.type === type;

const echo = await startEchoService();
const trio = await startTrio({
  backends: { echo: `udp://127.0.0.1:${echo.port}` },
  forwards: [{ listen: "udp://127.0.0.1:0", service: "echo" }],
  extraClients: ["connector-2"],
  relay: {
    services: {
      echo: { connectors: ["connector-1"], agents: ["agent-1"] },
      vault: { connectors: ["connector-2"], agents: ["agent-1"] },
    },
  },
  processes: [echo.proc],
});
const results: Record<string, unknown>[] = [];
try {
  const relayPort = portOf(trio.relayAddress);
  let received = 0;
  const connector = await dialPeer({
    relayPort,
    tls: trio.pki.tls("connector-2"),
    role: "connector",
    instance: "be0cbe0cbe0cbe0c",
    onChannelPacket: () => void received++,
  });
  connector.send({ type: "register", services: [{ name: "vault", protocol: "udp" }] });
  await connector.next(isType("registered"));
  const agent = await dialPeer({ relayPort, tls: trio.pki.tls("agent-1") });
  agent.send({ type: "session_open", id: 1, service: "vault", session: "ab".repeat(16) });
  const announced = await connector.next(isType("channel"));
  connector.send({ type: "channel_ready", channel: announced.channel });
  const opened = await agent.next(isType("session_opened"));
  const packet = new Uint8Array(SIZE);
  writeChannelHeader(packet, ChannelPacketType.DATA, opened.channel);
  const relay = udpTarget("127.0.0.1", relayPort);
  const pid = trio.relay.pid;
  for (const rate of rates) {
    received = 0;
    const cpuBefore = cpuSeconds(pid);
    const started = performance.now();
    let sent = 0;
    // Paced in 1 ms ticks: each tick sends what the rate owes by then.
    while (sent < count) {
      const owed = Math.min(count, Math.floor(((performance.now() - started) / 1000) * rate));
      while (sent < owed) {
        agent.conn.socket.send(packet, relay);
        sent++;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    await new Promise((r) => setTimeout(r, 500));
    const cpu = cpuSeconds(pid) - cpuBefore;
    const result = {
      rate,
      sent,
      received,
      lost_percent: round((100 * (sent - received)) / sent),
      relay_us_per_packet: round((cpu * 1e6) / Math.max(1, received)),
    };
    progress("channel forwarding", result);
    results.push(result);
  }
  await writeResult("channels", { size: SIZE, count, results });
} finally {
  await closePeers();
  await trio.stop();
}
