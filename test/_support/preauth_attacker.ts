/**
 * The pre-auth attacker of the hardening tests, run as its own process: hundreds of QUIC
 * clients are kept out of the test runner (whose workers share one process with the native
 * quiche addon).
 *
 * Usage: `deno run -A --unstable-net test/_support/preauth_attacker.ts '<json>'` with
 * `{mode, relayPort, bindHost, count, tls: {ca, cert?, key?}, write?, handshakeMs?, concurrency?}`:
 * - `half-open`: handshakes that follow the relay's Retry and then ignore it (finding 4);
 * - `silent`: TLS sessions that never say hello (finding 5), optionally writing the bytes
 *   `write` on the control stream first (finding 6).
 *
 * Prints JSON lines: `ready` with `held` (half-open handshakes under way) or `established`
 * (sessions up and not closed), then one `closed` line per session the relay closes, with
 * its reason. SIGTERM stops it.
 *
 * @module
 */
import { dialPeer, holdHalfOpen, type Peer } from "./attack_client.ts";

interface AttackOptions {
  mode: "half-open" | "silent";
  relayPort: number;
  bindHost: string;
  count: number;
  tls: { ca: string; cert?: string; key?: string };
  write?: number[];
  handshakeMs?: number;
  /** Dials in flight at once (default: all of them). */
  concurrency?: number;
}

const print = (fields: Record<string, unknown>) => console.log(JSON.stringify(fields));

if (import.meta.main) {
  const options: AttackOptions = JSON.parse(Deno.args[0]);
  const { relayPort, bindHost, count } = options;
  let stop: () => void;
  if (options.mode === "half-open") {
    const attack = await holdHalfOpen(
      relayPort,
      bindHost,
      count,
      Deno.readFileSync(options.tls.ca),
    );
    // Ready once the relay's Retries have come back (bounded).
    for (let i = 0; i < 100 && attack.held < count; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    print({ msg: "ready", held: attack.held });
    stop = () => attack.close();
  } else {
    const dials: (Peer | null)[] = [];
    const batch = options.concurrency ?? count;
    for (let start = 0; start < count; start += batch) {
      dials.push(
        ...await Promise.all(
          Array.from({ length: Math.min(batch, count - start) }, () =>
            dialPeer({
              relayPort,
              tls: options.tls,
              role: null,
              bindHost,
              handshakeMs: options.handshakeMs ?? 3000,
            }).catch(() => null)),
        ),
      );
    }
    const peers = dials.filter((p): p is Peer => p !== null && !p.conn.closed);
    for (const peer of peers) {
      if (options.write) peer.conn.streamWrite(0, Uint8Array.from(options.write));
      peer.closed.then((info) => print({ msg: "closed", reason: info.peer?.reason ?? null }));
    }
    print({ msg: "ready", established: peers.length });
    stop = () => {
      for (const peer of peers) peer.conn.close(0, "done");
    };
  }
  Deno.addSignalListener("SIGTERM", () => {
    stop();
    setTimeout(() => Deno.exit(0), 200);
  });
}
