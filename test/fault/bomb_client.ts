/**
 * Connection bomb for the fault suite, run as its own process so the test's latency probe
 * does not share an event loop with a thousand QUIC clients.
 *
 * Usage: `deno run -A --unstable-net test/fault/bomb_client.ts RELAY_PORT CERT KEY CA COUNT
 * SOURCES SERVICE INFLIGHT`. Opens COUNT agent connections to 127.0.0.1:RELAY_PORT as fast as
 * the relay takes them: a new dial starts whenever fewer than INFLIGHT handshakes are pending
 * (a dial-everything-at-once burst only overflows the relay's socket buffer and then waits
 * out Initial retransmission backoff). Dials go round robin over the source addresses
 * 127.0.0.2 … 127.0.0.(SOURCES+1). Each connection says `hello`
 * as an agent, opens one UDP flow to SERVICE and sends one datagram on it; a dial whose
 * handshake fails is redialed like the real agent's (see `dial`). Prints JSON lines: `ready`,
 * then `bombed` with the counts (and why any dial was redialed, open refused or connection
 * failed) once every connection has an answer, and holds the connections until SIGTERM, which
 * closes them all and prints `closed`.
 *
 * @module
 */
import { CONTROL_STREAM_ID, createControlChannel } from "../../shared/control_channel.ts";
import { PROTOCOL_VERSION } from "../../shared/protocol/control.ts";
import {
  CloseCode,
  connectQuic,
  describeClose,
  type QuicConnection,
} from "../../shared/quic/mod.ts";
import { type Backoff, createBackoff } from "../../shared/backoff.ts";
import { encodeWhole } from "../../shared/protocol/datagram.ts";

/** Redials of one connection whose handshake failed, before the bomb counts it as failed. */
const MAX_REDIALS = 3;

if (import.meta.main) {
  const [port, cert, key, ca, countArg, sourcesArg, service, inflightArg] = Deno.args;
  const inflight = Number(inflightArg ?? 64);
  let pending = 0;
  let slot = Promise.withResolvers<void>();
  const settle = () => {
    pending--;
    slot.resolve();
  };
  const tls = {
    cert: Deno.readFileSync(cert),
    key: Deno.readFileSync(key),
    ca: Deno.readFileSync(ca),
  };
  const count = Number(countArg);
  const sources = Number(sourcesArg);
  const conns: QuicConnection[] = [];
  const channels: ReturnType<typeof createControlChannel>[] = [];
  const outcome = { established: 0, flows: 0, refused: 0, failed: 0, redials: 0, closed: 0 };
  /** Why dials were redialed, opens refused and connections failed: reason → count. */
  const [redialed, refusals, failures]: Record<string, number>[] = [{}, {}, {}];
  const tally = (into: Record<string, number>, why: string) => into[why] = (into[why] ?? 0) + 1;
  /** Shortest and longest time from dial to close of a redialed dial (ms). */
  const failedDialMs = [Infinity, 0];
  let answered = 0;
  const started = performance.now();
  console.log(JSON.stringify({ msg: "ready" }));
  const done = Promise.withResolvers<void>();
  const answer = (key: "flows" | "refused" | "failed") => {
    outcome[key]++;
    if (++answered === count) done.resolve();
  };
  /**
   * Dials connection `i`, and dials it again when its handshake fails, like the real agent's
   * relay link. The relay's per-IP handshake budget drops Initials that arrive over it;
   * quiche then retransmits with doubling timeouts (1, 2, 4, 8 s), and one dropped four
   * times is past its Retry token's lifetime (about 10 s) when it next tries: the relay
   * answers INVALID_TOKEN (0x0b) and that dial is over. A real agent redials after a
   * jittered backoff; so does the bomb, up to MAX_REDIALS times per connection, and counts
   * it. A connection the relay closes after its handshake is not redialed: that is a failure.
   */
  const dial = (i: number, backoff: Backoff, once: () => void) => {
    const dialed = performance.now();
    const conn = connectQuic({
      server: { host: "127.0.0.1", port: Number(port) },
      serverName: "localhost",
      tls,
      bindHost: `127.0.0.${2 + (i % sources)}`,
      idleTimeoutMs: 30_000,
    });
    conns.push(conn);
    let state: "dialing" | "hello" | "open" | "done" = "dialing";
    const channel = createControlChannel(conn, {
      onMessage(message) {
        if (state === "hello" && message.type === "hello") {
          state = "open";
          channel.send({ type: "open", id: 1, service, protocol: "udp" });
        } else if (state === "open" && message.type === "opened") {
          state = "done";
          channels.push(channel); // keepalives only after hello, or the relay sees a violation
          once();
          const frame = new Uint8Array(64);
          const length = encodeWhole(message.flow, new Uint8Array(16).fill(i & 0xff), frame);
          conn.sendDatagram(frame.subarray(0, length));
          answer("flows");
        } else if (state === "open" && message.type === "refused") {
          state = "done";
          once();
          tally(refusals, `${message.reason}: ${message.message}`);
          answer("refused");
        }
      },
      onProtocolError: () => conn.close(CloseCode.PROTOCOL_VIOLATION, "bad frame"),
    });
    conn.setHandlers({
      onEstablished() {
        outcome.established++;
        state = "hello";
        channel.send({ type: "hello", v: PROTOCOL_VERSION, role: "agent" });
      },
      onStreamReadable(id) {
        if (id === CONTROL_STREAM_ID) channel.readable();
      },
      onStreamWritable(id) {
        if (id === CONTROL_STREAM_ID) channel.writable();
      },
      onDatagram() {},
      onClosed(info) {
        outcome.closed++;
        if (state === "done") return;
        const why = `${state}: ${describeClose(info, "closed")}`;
        if (state === "dialing" && backoff.attempt < MAX_REDIALS) {
          state = "done";
          outcome.redials++;
          tally(redialed, why);
          const took = Math.round(performance.now() - dialed);
          failedDialMs[0] = Math.min(failedDialMs[0], took);
          failedDialMs[1] = Math.max(failedDialMs[1], took);
          setTimeout(() => dial(i, backoff, once), backoff.next());
          return;
        }
        state = "done";
        once();
        tally(failures, why);
        answer("failed");
      },
    });
  };
  for (let i = 0; i < count; i++) {
    while (pending >= inflight) {
      slot = Promise.withResolvers<void>();
      await slot.promise;
    }
    pending++;
    let counted = false;
    dial(i, createBackoff(), () => {
      if (!counted) (counted = true, settle());
    });
  }
  // Like a real agent, every connection pings at a third of the (default 30 s) idle timeout,
  // so none idles out while the rest of the bomb is still being dialed.
  let seq = 0;
  const keepalive = setInterval(() => {
    seq++;
    for (const channel of channels) channel.send({ type: "ping", seq });
  }, 10_000);
  await done.promise;
  console.log(JSON.stringify({
    msg: "bombed",
    ...outcome,
    ms: Math.round(performance.now() - started),
    redialed,
    ...(outcome.redials > 0 ? { redialed_after_ms: failedDialMs } : {}),
    refusals,
    failures,
  }));
  const closing = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGTERM", () => closing.resolve());
  await closing.promise;
  clearInterval(keepalive);
  // Closed in batches: a thousand CONNECTION_CLOSE packets at once would overflow the relay's
  // socket buffer, and the lost ones would linger there until their idle timeout.
  for (let i = 0; i < conns.length; i++) {
    conns[i].close(CloseCode.NO_ERROR, "bomb over");
    if (i % inflight === inflight - 1) await new Promise((r) => setTimeout(r, 5));
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && conns.some((c) => !c.closed)) {
    await new Promise((r) => setTimeout(r, 20));
  }
  console.log(JSON.stringify({ msg: "closed", open: conns.filter((c) => !c.closed).length }));
  Deno.exit(0);
}
