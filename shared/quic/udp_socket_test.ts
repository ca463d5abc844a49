import assert from "node:assert/strict";
import {
  openUdpSocket,
  type UdpSocket,
  type UdpSocketKind,
  udpStats,
  udpTarget,
} from "./udp_socket.ts";
import { createSockaddrDecoder, encodeSockaddr } from "./socket_address.ts";
import { AF_INET, AF_INET6, libcPath } from "./libc.ts";

/** Waits (bounded) until `check` holds. */
async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function pair(kind: UdpSocketKind, host = "127.0.0.1") {
  const received: { data: Uint8Array; from: Deno.NetAddr }[] = [];
  const receiver = openUdpSocket({
    host,
    port: 0,
    kind,
    onPacket: (data, from) => received.push({ data: data.slice(), from: { ...from } }),
  });
  const sender = openUdpSocket({ host, port: 0, kind, sendBufferBytes: 65_507, onPacket() {} });
  return { receiver, sender, received, close: () => (receiver.close(), sender.close()) };
}

for (const kind of ["batched", "portable"] as const) {
  Deno.test(`udp socket (${kind}): a burst of every size arrives whole and in order`, async () => {
    const { receiver, sender, received, close } = pair(kind);
    try {
      assert.equal(receiver.kind, kind);
      // 1 B to the largest UDP payload, and runs of equal sizes (the GSO case) between.
      const sizes = [1, 2, 1200, 1200, 1200, 1200, 700, 8192, 65_507, 1350, 1350, 1350, 16];
      // The portable socket cannot raise its 212 KiB receive buffer: a long burst overflows
      // it (the reason the batched socket exists), so it gets a short one.
      for (let i = 0; i < (kind === "batched" ? 100 : 10); i++) sizes.push(1200);
      const to = udpTarget("127.0.0.1", receiver.addr.port);
      sizes.forEach((size, i) => {
        const data = new Uint8Array(size).fill(i & 0xff);
        sender.send(data, to);
      });
      await until("the burst", () => received.length === sizes.length);
      received.forEach(({ data, from }, i) => {
        assert.equal(data.length, sizes[i], `datagram ${i}`);
        assert.equal(data[0], i & 0xff);
        assert.equal(data[data.length - 1], i & 0xff);
        assert.deepEqual(from, {
          transport: "udp",
          hostname: "127.0.0.1",
          port: sender.addr.port,
        });
      });
      assert.equal(sender.pendingSends, 0);
    } finally {
      close();
    }
  });

  Deno.test(`udp socket (${kind}): IPv6, and IPv4 peers of a dual-stack socket`, async () => {
    const { receiver, sender, received, close } = pair(kind, "::1");
    const dual = openUdpSocket({ host: "::", port: 0, kind, onPacket() {} });
    const v4 = openUdpSocket({ host: "127.0.0.1", port: 0, kind, onPacket() {} });
    try {
      sender.send(new Uint8Array([1]), udpTarget("::1", receiver.addr.port));
      await until("the IPv6 datagram", () => received.length === 1);
      assert.equal(received[0].from.hostname, "::1");
      // Sent from the dual-stack socket to an IPv4 address: the mapped form, as Deno has it.
      const seen: string[] = [];
      const v4Receiver = openUdpSocket({
        host: "127.0.0.1",
        port: 0,
        kind,
        onPacket: (_, from) => void seen.push(from.hostname),
      });
      dual.send(new Uint8Array([2]), udpTarget("127.0.0.1", v4Receiver.addr.port));
      dual.send(new Uint8Array([3]), udpTarget("::ffff:127.0.0.1", v4Receiver.addr.port));
      await until("both IPv4 datagrams", () => seen.length === 2);
      assert.deepEqual(seen, ["127.0.0.1", "127.0.0.1"]);
      v4Receiver.close();
    } finally {
      close();
      dual.close();
      v4.close();
    }
  });

  Deno.test(`udp socket (${kind}): a send the socket cannot make is reported, not thrown`, async () => {
    const errors: unknown[] = [];
    const v4 = openUdpSocket({
      host: "127.0.0.1",
      port: 0,
      kind,
      onPacket() {},
      onError: (error, during) => void errors.push([during, error]),
    });
    try {
      // An IPv6 destination from an IPv4 socket.
      v4.send(new Uint8Array(10), udpTarget("::1", 9));
      await until("the error", () => errors.length === 1);
      assert.equal((errors[0] as unknown[])[0], "send");
      assert.equal(v4.pendingSends, 0);
    } finally {
      v4.close();
    }
  });
}

Deno.test("udp socket (batched): a flood is taken in batches and counted", async () => {
  const { receiver, sender, received, close } = pair("batched");
  const before = structuredClone(udpStats());
  try {
    const to = udpTarget("127.0.0.1", receiver.addr.port);
    const data = new Uint8Array(1200);
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 200; i++) sender.send(data, to);
      await new Promise((r) => setTimeout(r, 2));
    }
    await until("the flood", () => received.length === 4000);
    const after = udpStats();
    const calls = after.calls.sent - before.calls.sent;
    // 20 turns of 200 datagrams each: a few calls per turn, not one per datagram.
    assert.ok(calls <= 20 * 4, `sendmmsg calls for 4000 datagrams: ${calls}`);
    assert.ok(after.calls.received - before.calls.received < 4000);
    assert.ok(after.segmentedSends > before.segmentedSends, "runs of equal datagrams use GSO");
    // The kernel reports twice the size it granted; 4 MiB is granted unprivileged here
    // (net.core.rmem_max) and forced beyond it as root.
    assert.ok(after.bufferBytes.receive >= 2 * 4 * 1024 * 1024 || after.bufferBytes.receive > 0);
  } finally {
    close();
  }
});

Deno.test("udp socket (batched): closing hands queued datagrams to the kernel first", async () => {
  const received: number[] = [];
  const receiver: UdpSocket = openUdpSocket({
    host: "127.0.0.1",
    port: 0,
    kind: "batched",
    onPacket: (data) => void received.push(data[0]),
  });
  const sender = openUdpSocket({ host: "127.0.0.1", port: 0, kind: "batched", onPacket() {} });
  try {
    const to = udpTarget("127.0.0.1", receiver.addr.port);
    for (let i = 0; i < 10; i++) sender.send(new Uint8Array([i]), to);
    // Queued for the end of this turn; close() must not lose them (a CONNECTION_CLOSE).
    sender.close();
    sender.send(new Uint8Array([99]), to);
    await until("the queued datagrams", () => received.length === 10);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(received, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  } finally {
    receiver.close();
  }
});

Deno.test("udp socket (batched): a destination outside --allow-net is refused as Deno would", async () => {
  const libc = libcPath();
  if (libc === null) return; // The portable socket leaves this check to Deno itself.
  const got: string[] = [];
  const a = openUdpSocket({ host: "127.0.0.1", port: 0, onPacket: () => void got.push("a") });
  const d = openUdpSocket({ host: "127.0.0.1", port: 0, onPacket: () => void got.push("d") });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        `--allow-net=127.0.0.1:0,127.0.0.1:${a.addr.port}`,
        `--allow-ffi=${libc}`,
        new URL("./testdata/net_scope.ts", import.meta.url).pathname,
        String(a.addr.port),
        String(d.addr.port),
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const result = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.deepEqual(result, { kind: "batched", errors: ["NotCapable"] });
    await until("the allowed datagram", () => got.includes("a"));
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(got, ["a"], "nothing reached the port the sandbox does not grant");
  } finally {
    a.close();
    d.close();
  }
});

Deno.test("socket addresses: encoded and decoded as Deno names them", () => {
  const out = new Uint8Array(32);
  assert.equal(encodeSockaddr("127.0.0.1", 4433, AF_INET, out), 16);
  const decode = createSockaddrDecoder();
  const view = new DataView(out.buffer);
  assert.deepEqual(decode(out, view), { transport: "udp", hostname: "127.0.0.1", port: 4433 });
  assert.equal(decode(out, view), decode(out, view), "a sender seen before is not allocated again");
  assert.equal(encodeSockaddr("::1", 53, AF_INET6, out), 28);
  assert.deepEqual(decode(out, view), { transport: "udp", hostname: "::1", port: 53 });
  assert.equal(encodeSockaddr("10.1.2.3", 1, AF_INET6, out), 28);
  assert.equal(decode(out, view).hostname, "::ffff:10.1.2.3");
  assert.equal(encodeSockaddr("2001:db8::1:0:0:1", 7, AF_INET6, out), 28);
  assert.equal(decode(out, view).hostname, "2001:db8::1:0:0:1");
  assert.equal(encodeSockaddr("::1", 53, AF_INET, out), 0, "IPv6 from an IPv4 socket");
  assert.equal(encodeSockaddr("relay.example", 53, AF_INET, out), 0, "names are not addresses");
});
