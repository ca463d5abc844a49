import assert from "node:assert/strict";
import { createCa, createClientCertificate, createRelayCertificate } from "../identity/dev_ca.ts";
import { identityFromCertificate } from "../identity/peer_identity.ts";
import { openUdpSocket, udpTarget } from "./udp_socket.ts";
import {
  CloseCode,
  type CloseInfo,
  connectQuic,
  type QuicConnection,
  startQuicServer,
  type TlsMaterial,
} from "./mod.ts";

const enc = new TextEncoder();
const ca = await createCa();
const relayCert = await createRelayCertificate(ca);
const clientCert = await createClientCertificate(ca, "agent-1");
const otherCa = await createCa({ commonName: "other CA" });
const strangerCert = await createClientCertificate(otherCa, "stranger");

const material = (c: { cert: string; key: string }): TlsMaterial => ({
  cert: enc.encode(c.cert),
  key: enc.encode(c.key),
  ca: enc.encode(ca.cert),
});

/**
 * Resolves with `value()` once `test()` holds, polling; rejects after `ms`. The default is
 * generous: on a loaded 2-core runner a lost Initial is resent only after PTO backoff
 * (about 1 s, then 2 s, then 4 s).
 */
async function waitFor<T>(
  what: string,
  test: () => T | undefined | false,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const value = test();
    if (value !== undefined && value !== false) return value;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

interface Harness {
  server: ReturnType<typeof startQuicServer>;
  serverConns: QuicConnection[];
  client: QuicConnection;
  clientClosed: CloseInfo[];
  serverClosed: CloseInfo[];
  shutdown(): Promise<void>;
}

function startPair(
  opts: { retry?: boolean; idleTimeoutMs?: number; clientTls?: TlsMaterial } = {},
): Harness {
  const serverConns: QuicConnection[] = [];
  const serverClosed: CloseInfo[] = [];
  const clientClosed: CloseInfo[] = [];
  const server = startQuicServer({
    host: "127.0.0.1",
    port: 0,
    tls: material(relayCert),
    retry: opts.retry,
    idleTimeoutMs: opts.idleTimeoutMs,
    onConnection(conn) {
      serverConns.push(conn);
      const buf = new Uint8Array(65536);
      // Echo stream data back, including the FIN; hold what quiche cannot take yet and stop
      // reading meanwhile, so flow control pushes back on the client.
      let pending: Uint8Array | null = null;
      let pendingFin = false;
      const drain = (id: number) => {
        if (pending !== null) {
          const n = conn.streamWrite(id, pending, pendingFin);
          if (n < pending.length || (pending.length === 0 && n === 0 && pendingFin && false)) {
            pending = pending.subarray(n);
            return;
          }
          pending = null;
        }
        for (;;) {
          const r = conn.streamRead(id, buf);
          if (r === null) break;
          const chunk = buf.subarray(0, r.bytes);
          const n = conn.streamWrite(id, chunk, r.fin);
          if (n < chunk.length) {
            pending = chunk.slice(n);
            pendingFin = r.fin;
            return;
          }
          if (r.fin) break;
        }
      };
      conn.setHandlers({
        // These clients authenticate by certificate alone: a slow test must not meet the
        // pre-auth deadline.
        onEstablished: () => server.authenticated(conn),
        onDatagram: (d) => conn.sendDatagram(d),
        onStreamReadable: drain,
        onStreamWritable: drain,
        onClosed: (info) => serverClosed.push(info),
      });
    },
  });
  const client = connectQuic({
    server: { host: "127.0.0.1", port: server.addr.port },
    serverName: "localhost",
    tls: opts.clientTls ?? material(clientCert),
    idleTimeoutMs: opts.idleTimeoutMs,
  });
  return {
    server,
    serverConns,
    client,
    clientClosed,
    serverClosed,
    async shutdown() {
      client.close(CloseCode.NO_ERROR, "test done");
      await waitFor("client closed", () => client.closed);
      for (const c of serverConns) c.close(CloseCode.NO_ERROR, "test done");
      await waitFor("server conns closed", () => serverConns.every((c) => c.closed));
      server.close();
    },
  };
}

Deno.test("quic endpoint: handshake with mTLS exposes the client identity", async () => {
  const h = startPair();
  const closed: CloseInfo[] = [];
  h.client.setHandlers({ onClosed: (i) => closed.push(i) });
  await waitFor("established", () => h.client.established && h.serverConns[0]?.established);
  assert.equal(identityFromCertificate(h.serverConns[0].peerCertificate()), "agent-1");
  assert.equal(h.server.counters.retries, 1, "a Retry validated the client address");
  await h.shutdown();
  assert.equal(closed.length, 1);
  assert.deepEqual(closed[0].local, { isApp: true, code: 0, reason: "test done" });
});

Deno.test("quic endpoint: datagrams both ways, every size up to the writable limit", async () => {
  const h = startPair();
  const received: Uint8Array[] = [];
  h.client.setHandlers({ onDatagram: (d) => received.push(d.slice()) });
  await waitFor("established", () => h.client.established);
  const max = h.client.maxDatagramSize()!;
  assert.ok(max >= 1100, `max datagram ${max}`);
  const sizes = [1, 2, 100, 500, 1000, max];
  for (const size of sizes) {
    const payload = new Uint8Array(size).map((_, i) => (i * 7 + size) & 0xff);
    assert.ok(h.client.sendDatagram(payload));
  }
  await waitFor("echoes", () => received.length === sizes.length);
  assert.deepEqual(received.map((d) => d.length).sort((a, b) => a - b), sizes);
  assert.equal(h.client.sendDatagram(new Uint8Array(max + 1)), false, "oversized is refused");
  await h.shutdown();
});

Deno.test("quic endpoint: small datagrams written in one turn share packets", async () => {
  const h = startPair();
  const received: Uint8Array[] = [];
  h.client.setHandlers({ onDatagram: (d) => received.push(d.slice()) });
  await waitFor("established", () => h.client.established);
  // Let the handshake's last ACKs settle, so the count below is the datagrams' own packets.
  await new Promise((r) => setTimeout(r, 100));
  const before = h.client.stats().sent;
  for (let i = 0; i < 40; i++) assert.ok(h.client.sendDatagram(new Uint8Array(20).fill(i)));
  await waitFor("echoes", () => received.length === 40);
  // 40 frames of 20 B fit two or three packets; one packet each would be 40.
  const packets = h.client.stats().sent - before;
  assert.ok(packets <= 10, `packets for 40 small datagrams: ${packets}`);
  await h.shutdown();
});

Deno.test("quic endpoint: bidirectional stream echo of 1 MiB with FIN", async () => {
  const h = startPair();
  await waitFor("established", () => h.client.established);
  const payload = new Uint8Array(1024 * 1024).map((_, i) => (i * 31) & 0xff);
  const chunks: Uint8Array[] = [];
  let fin = false;
  let offset = 0;
  const buf = new Uint8Array(65536);
  const pump = () => {
    while (offset < payload.length) {
      const n = h.client.streamWrite(0, payload.subarray(offset), true);
      offset += n;
      if (n === 0) break;
    }
  };
  h.client.setHandlers({
    onStreamWritable: pump,
    onStreamReadable(id) {
      for (;;) {
        const r = h.client.streamRead(id, buf);
        if (r === null) break;
        chunks.push(buf.slice(0, r.bytes));
        if (r.fin) {
          fin = true;
          break;
        }
      }
    },
  });
  pump();
  await waitFor("echo FIN", () => fin, 15000);
  const got = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    got.set(c, at);
    at += c.length;
  }
  assert.equal(got.length, payload.length);
  assert.deepEqual(got, payload);
  await h.shutdown();
});

Deno.test("quic endpoint: idle timeout closes both sides", async () => {
  const h = startPair({ idleTimeoutMs: 300 });
  h.client.setHandlers({ onClosed: (i) => h.clientClosed.push(i) });
  await waitFor("established", () => h.client.established);
  await waitFor("client idle close", () => h.clientClosed[0], 5000);
  assert.equal(h.clientClosed[0].timedOut, true);
  await waitFor("server idle close", () => h.serverClosed[0], 5000);
  assert.equal(h.serverClosed[0].timedOut, true);
  h.server.close();
});

Deno.test("quic endpoint: without Retry the handshake still completes", async () => {
  const h = startPair({ retry: false });
  await waitFor("established", () => h.client.established);
  assert.equal(h.server.counters.retries, 0);
  await h.shutdown();
});

Deno.test("quic endpoint: a client certificate from another CA fails the handshake", async () => {
  const h = startPair({
    clientTls: {
      cert: enc.encode(strangerCert.cert),
      key: enc.encode(strangerCert.key),
      ca: enc.encode(ca.cert),
    },
  });
  h.client.setHandlers({ onClosed: (i) => h.clientClosed.push(i) });
  const info = await waitFor("client closed", () => h.clientClosed[0]);
  // TLS 1.3 lets the client finish before the server checks its certificate, so the client
  // sees the refusal as the peer's close: a crypto error with the unknown_ca alert (0x100+48).
  assert.deepEqual(info.peer && { isApp: info.peer.isApp, code: info.peer.code }, {
    isApp: false,
    code: 0x100 + 48,
  });
  assert.equal(h.serverConns.some((c) => c.established), false);
  await waitFor("server side gone", () => h.serverConns.every((c) => c.closed));
  assert.equal(h.server.connections.size, 0);
  h.server.close();
});

Deno.test("quic endpoint: garbage packets are dropped, counted, and service continues", async () => {
  const h = startPair();
  await waitFor("established", () => h.client.established);
  const received: Uint8Array[] = [];
  h.client.setHandlers({ onDatagram: (d) => received.push(d.slice()) });
  const attacker = openUdpSocket({ host: "127.0.0.1", port: 0, onPacket: () => {} });
  const target = udpTarget("127.0.0.1", h.server.addr.port);
  let seed = 42;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  for (let i = 0; i < 300; i++) {
    const size = i % 3 === 0 ? 1200 : 1 + Math.floor(rand() * 1500);
    const junk = new Uint8Array(size).map(() => Math.floor(rand() * 256));
    if (i % 5 === 0) junk[0] = 0xc0; // a long-header Initial look-alike
    attacker.send(junk, target);
    // Paced so the kernel's receive buffer never overflows: every packet must be counted.
    if (i % 20 === 19) await new Promise((r) => setTimeout(r, 10));
  }
  await waitFor("junk processed", () => {
    const d = h.server.counters.drops;
    const dropped = Object.values(d).reduce((a, b) => a + b, 0);
    // Every junk packet is dropped, except an Initial look-alike that earns a Retry.
    return dropped + h.server.counters.retries - 1 >= 300 || undefined;
  });
  assert.ok(h.client.sendDatagram(enc.encode("still alive")));
  await waitFor("echo after junk", () => received.length === 1);
  assert.equal(h.server.connections.size, 1);
  attacker.close();
  await h.shutdown();
});

/** A client of `server` recording how it closed and the datagrams it received. */
function dialClient(server: { addr: { port: number } }) {
  const client = connectQuic({
    server: { host: "127.0.0.1", port: server.addr.port },
    serverName: "localhost",
    tls: material(clientCert),
  });
  const closed: CloseInfo[] = [];
  const received: Uint8Array[] = [];
  client.setHandlers({
    onClosed: (info) => closed.push(info),
    onDatagram: (d) => received.push(d.slice()),
  });
  return { client, closed, received };
}

/** A raw UDP socket for packets our own endpoint would never send. */
function rawSocket() {
  const conn = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  return {
    conn,
    async receive(ms = 2000): Promise<Uint8Array | null> {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const result = await Promise.race([
        conn.receive().then(([data]) => data),
        new Promise<null>((r) => timer = setTimeout(() => r(null), ms)),
      ]);
      clearTimeout(timer);
      return result;
    },
  };
}

/** A padded long-header packet: `first` byte, `version`, 8-byte CIDs. */
function longHeaderPacket(first: number, version: number): Uint8Array {
  const packet = new Uint8Array(1200);
  packet[0] = first;
  new DataView(packet.buffer).setUint32(1, version);
  packet[5] = 8;
  packet.set([1, 2, 3, 4, 5, 6, 7, 8], 6);
  packet[14] = 8;
  packet.set([9, 10, 11, 12, 13, 14, 15, 16], 15);
  return packet;
}

Deno.test("quic endpoint: version negotiation for any unknown version, whatever the type bits", async () => {
  const server = startQuicServer({
    host: "127.0.0.1",
    port: 0,
    tls: material(relayCert),
    onConnection: () => {},
  });
  const raw = rawSocket();
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port: server.addr.port };
  try {
    // QUIC v2's Initial (type bits 01), a greased version with v1's Initial bits, and a
    // v2 Handshake (type bits 11): each gets a Version Negotiation listing version 1.
    for (const [first, version] of [[0xd0, 0x6b3343cf], [0xc0, 0x1a2a3a4a], [0xf0, 0x6b3343cf]]) {
      await raw.conn.send(longHeaderPacket(first, version), to);
      const answer = await raw.receive();
      assert.ok(answer !== null, `answered 0x${version.toString(16)}`);
      const view = new DataView(answer.buffer, answer.byteOffset);
      assert.equal(answer[0] & 0x80, 0x80, "long header");
      assert.equal(view.getUint32(1), 0, "version 0 marks Version Negotiation");
      // It echoes our CIDs swapped: its DCID is our SCID.
      assert.deepEqual([...answer.subarray(6, 6 + answer[5])], [9, 10, 11, 12, 13, 14, 15, 16]);
      const versions = answer.subarray(6 + answer[5] + 1 + answer[6 + answer[5]]);
      assert.ok(
        Array.from(
          { length: versions.length / 4 },
          (_, i) => new DataView(versions.buffer, versions.byteOffset).getUint32(i * 4),
        ).includes(1),
      );
    }
    // Small packets are not answered (no amplification), only counted.
    await raw.conn.send(longHeaderPacket(0xd0, 0x6b3343cf).subarray(0, 100), to);
    assert.equal(await raw.receive(300), null);
    assert.equal(server.counters.versionNegotiations, 3);
    assert.equal(server.counters.drops.unsupported_version, 4);
    // A short header carries no version: bytes 1-4 of a short packet are not read as one.
    await raw.conn.send(Uint8Array.of(0x40, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5), to);
    await waitFor("the short packet counted", () => server.counters.drops.malformed_header === 1);
    assert.equal(server.counters.drops.unsupported_version, 4);
  } finally {
    raw.conn.close();
    server.close();
  }
});

Deno.test("quic endpoint: an Initial with a token this server did not issue gets INVALID_TOKEN", async () => {
  const issuer = startQuicServer({
    host: "127.0.0.1",
    port: 0,
    tls: material(relayCert),
    onConnection: () => {},
  });
  const verifier = startQuicServer({
    host: "127.0.0.1",
    port: 0,
    tls: material(relayCert),
    onConnection: () => {},
  });
  const raw = rawSocket();
  const local = { host: "127.0.0.1", port: (raw.conn.addr as Deno.NetAddr).port };
  const issuerAddr = { host: "127.0.0.1", port: issuer.addr.port };
  const { quiche } = await import("./native.ts");
  const { createQuicConfig } = await import("./tls_config.ts");
  const client = quiche.Connection.connect(
    "localhost",
    crypto.getRandomValues(new Uint8Array(16)),
    local,
    issuerAddr,
    createQuicConfig(material(clientCert)),
  );
  const buffer = new Uint8Array(1500);
  const flight = (port: number) => {
    const sent = client.send(buffer);
    assert.ok(sent !== null);
    return raw.conn.send(buffer.subarray(0, sent[0]), {
      transport: "udp",
      hostname: "127.0.0.1",
      port,
    });
  };
  try {
    await flight(issuer.addr.port);
    const retry = await raw.receive();
    assert.ok(retry !== null, "the issuer answers with a Retry");
    client.recv(retry, { from: issuerAddr, to: local });
    // The Initial carrying the issuer's token goes to a server whose key differs (as after
    // a restart): its token is invalid there.
    await flight(verifier.addr.port);
    const close = await raw.receive();
    assert.ok(close !== null, "not silence");
    assert.ok(close.length < 100, "a small answer (no amplification)");
    client.recv(close, { from: issuerAddr, to: local });
    assert.deepEqual(
      { isApp: client.peerError()?.isApp, code: client.peerError()?.errorCode },
      { isApp: false, code: 0x0b },
      "the client reads CONNECTION_CLOSE with INVALID_TOKEN",
    );
    assert.equal(verifier.counters.invalidTokenCloses, 1);
    assert.equal(verifier.counters.drops.bad_token, 1);
  } finally {
    raw.conn.close();
    issuer.close();
    verifier.close();
  }
});

Deno.test("quic endpoint: pre-auth connections are capped per address and closed at their deadline", async () => {
  const accepted: QuicConnection[] = [];
  const server = startQuicServer({
    host: "127.0.0.1",
    port: 0,
    tls: material(relayCert),
    preauthTimeoutMs: 1500,
    maxPreauthPerIp: 2,
    onConnection(conn) {
      accepted.push(conn);
      conn.setHandlers({});
    },
  });
  const dial = () => dialClient(server);
  try {
    const first = dial();
    const second = dial();
    await waitFor("two handshakes", () => first.client.established && second.client.established);
    const third = dial();
    await waitFor("the third refused", () => server.counters.drops.preauth_limit > 0);
    assert.equal(third.client.established, false);
    assert.deepEqual(server.preauth(), { handshake: 0, hello: 2 });
    // One authenticates: it leaves the budget and outlives the deadline.
    server.authenticated(accepted[0]);
    await waitFor("the other closed at its deadline", () => second.closed.length > 0, 5000);
    assert.deepEqual(
      { code: second.closed[0].peer?.code, reason: second.closed[0].peer?.reason },
      { code: CloseCode.LIMIT, reason: "authentication_timeout" },
    );
    assert.equal(server.counters.preauthTimeouts, 1);
    // The third's retransmitted Initial now finds room.
    await waitFor("the third admitted", () => third.client.established, 10_000);
    assert.equal(first.client.closed, false, "the authenticated one stays");
    for (const c of [first, third]) c.client.close(CloseCode.NO_ERROR, "done");
    await waitFor("closed", () => first.client.closed && third.client.closed);
  } finally {
    server.close();
  }
});

Deno.test("quic endpoint: a newcomer beyond the total pre-auth budget evicts the oldest", async () => {
  const server = startQuicServer({
    host: "127.0.0.1",
    port: 0,
    tls: material(relayCert),
    maxPreauth: 2,
    onConnection: (conn) => conn.setHandlers({}),
  });
  const clients = [0, 1, 2].map(() => dialClient(server));
  try {
    await waitFor("the oldest evicted", () => clients[0].closed.length > 0);
    // Closed mid-handshake, the application close travels as a transport APPLICATION_ERROR
    // (RFC 9000 §10.2.3 hides the reason before the handshake is done).
    assert.ok(clients[0].closed[0].peer !== null, "closed by the server");
    await waitFor(
      "the others up",
      () => clients[1].client.established && clients[2].client.established,
    );
    assert.equal(server.counters.preauthEvictions, 1);
    for (const c of clients.slice(1)) c.client.close(CloseCode.NO_ERROR, "done");
    await waitFor("closed", () => clients.every((c) => c.client.closed));
  } finally {
    server.close();
  }
});

Deno.test("quic endpoint: a handler that throws closes its connection with INTERNAL, nothing else", async () => {
  const reported: string[] = [];
  const server = startQuicServer({
    host: "127.0.0.1",
    port: 0,
    tls: material(relayCert),
    onHandlerError: (_conn, error, where) => reported.push(`${where}: ${(error as Error).message}`),
    onConnection(conn) {
      conn.setHandlers({
        onDatagram(data) {
          if (data[0] === 0xff) throw new Error("handler bug");
          conn.sendDatagram(data);
        },
      });
      // A second install is refused: handlers are set once per connection.
      assert.throws(() => conn.setHandlers({}), /already set/);
    },
  });
  const dial = () => dialClient(server);
  try {
    const victim = dial();
    const bystander = dial();
    await waitFor("both up", () => victim.client.established && bystander.client.established);
    victim.client.sendDatagram(new Uint8Array([0xff]));
    await waitFor("the victim closed", () => victim.closed.length > 0);
    assert.deepEqual(
      { isApp: victim.closed[0].peer?.isApp, code: victim.closed[0].peer?.code },
      { isApp: true, code: CloseCode.INTERNAL },
    );
    assert.equal(victim.closed[0].peer?.reason, "internal_error");
    assert.deepEqual(reported, ["packet: handler bug"]);
    // A timer-driven entry is guarded the same way.
    const [first] = [...server.connections].filter((c) => !c.closed);
    assert.equal(first.guard("test timer", () => 7), 7);
    bystander.client.sendDatagram(new Uint8Array([1, 2, 3]));
    await waitFor("the bystander still served", () => bystander.received.length > 0);
    bystander.client.close(CloseCode.NO_ERROR, "done");
    await waitFor("closed", () => bystander.client.closed);
  } finally {
    server.close();
  }
});
