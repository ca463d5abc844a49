import assert from "node:assert/strict";
import { type DatagramView, encodeFragments, parseDatagram } from "./datagram.ts";
import { createReassembler, PENDING_ENTRY_OVERHEAD } from "./reassembly.ts";
import { seededRandom, shuffle } from "./_test_utils.ts";

interface Frame {
  bytes: Uint8Array;
  view: DatagramView;
}

function fragment(flow: number, datagramId: number, payload: Uint8Array, maxFrame = 1200): Frame[] {
  const frames: Frame[] = [];
  encodeFragments(flow, datagramId, payload, maxFrame, new Uint8Array(maxFrame), (frame) => {
    const bytes = frame.slice();
    frames.push({ bytes, view: parseDatagram(bytes, bytes.length)! });
  });
  return frames;
}

function payloadOf(length: number, random: () => number): Uint8Array {
  return new Uint8Array(length).map(() => Math.floor(random() * 256));
}

function manualClock(start = 1000): { now: () => number; advance(ms: number): void } {
  let time = start;
  return { now: () => time, advance: (ms) => time += ms };
}

for (const size of [8192, 65507]) {
  Deno.test(`fragments of a ${size}-byte payload at maxFrame 1200 reassemble in shuffled order`, () => {
    const random = seededRandom(size);
    const payload = payloadOf(size, random);
    const frames = shuffle(fragment(9, 41, payload), random);
    const reassembler = createReassembler();
    const results: (Uint8Array | null)[] = [];
    // A receive buffer reused across datagrams, as on the real receive path.
    const rx = new Uint8Array(1500);
    for (const frame of frames) {
      rx.set(frame.bytes);
      const view = parseDatagram(rx, frame.bytes.length)!;
      results.push(reassembler.add(9, view, rx));
    }
    assert.ok(results.slice(0, -1).every((r) => r === null));
    assert.deepEqual(results.at(-1), payload);
    assert.equal(reassembler.pendingBytes, 0);
    assert.equal(reassembler.pendingCount, 0);
    assert.deepEqual(reassembler.drops, {
      timeout: 0,
      over_budget: 0,
      inconsistent: 0,
      duplicate: 0,
    });
  });
}

Deno.test("interleaved datagrams of several flows with the same datagram id stay apart", () => {
  const random = seededRandom(7);
  const a = payloadOf(3000, random);
  const b = payloadOf(5000, random);
  const frames = shuffle(
    [
      ...fragment(1, 5, a).map((f) => ({ flow: 1, ...f })),
      ...fragment(2, 5, b).map((f) => ({ flow: 2, ...f })),
    ],
    random,
  );
  const reassembler = createReassembler();
  const done = new Map<number, Uint8Array>();
  for (const { flow, bytes, view } of frames) {
    const result = reassembler.add(flow, view, bytes);
    if (result) done.set(flow, result);
  }
  assert.deepEqual(done.get(1), a);
  assert.deepEqual(done.get(2), b);
});

Deno.test("whole datagrams pass through as a view of the input", () => {
  const buf = new Uint8Array([4, 0, 1, 2, 3]);
  const result = createReassembler().add(4, parseDatagram(buf, 5)!, buf);
  assert.deepEqual(result, new Uint8Array([1, 2, 3]));
  assert.equal(result?.buffer, buf.buffer);
});

Deno.test("incomplete datagrams are dropped as timeout on sweep and on add", () => {
  const clock = manualClock();
  const reassembler = createReassembler({ timeoutMs: 2000, now: clock.now });
  const random = seededRandom(3);
  const first = fragment(1, 1, payloadOf(3000, random));
  reassembler.add(1, first[0].view, first[0].bytes);
  assert.equal(
    reassembler.pendingBytes,
    PENDING_ENTRY_OVERHEAD + first[0].view.bodyEnd - first[0].view.bodyOffset,
  );
  clock.advance(1999);
  reassembler.sweep();
  assert.equal(reassembler.pendingCount, 1);
  clock.advance(1);
  reassembler.sweep();
  assert.equal(reassembler.pendingCount, 0);
  assert.equal(reassembler.pendingBytes, 0);
  assert.equal(reassembler.drops.timeout, 1);

  // Expiry on add: the late fragments start a fresh entry instead of completing a stale one.
  const second = fragment(2, 1, payloadOf(3000, random));
  reassembler.add(2, second[0].view, second[0].bytes);
  clock.advance(2500);
  assert.equal(reassembler.add(2, second[1].view, second[1].bytes), null);
  assert.equal(reassembler.drops.timeout, 2);
  assert.equal(reassembler.pendingCount, 1);
});

Deno.test("over budget drops the oldest pending datagrams first", () => {
  const clock = manualClock();
  const random = seededRandom(11);
  const chunk = 1200 - 6;
  // Room for three pending first fragments, not four.
  const maxBytes = 3 * (PENDING_ENTRY_OVERHEAD + chunk) + 10;
  const reassembler = createReassembler({ maxBytes, now: clock.now });
  const datagrams = [1, 2, 3, 4].map((id) => fragment(1, id, payloadOf(3000, random)));
  for (const frames of datagrams.slice(0, 3)) {
    reassembler.add(1, frames[0].view, frames[0].bytes);
    clock.advance(10);
  }
  assert.equal(reassembler.pendingCount, 3);
  reassembler.add(1, datagrams[3][0].view, datagrams[3][0].bytes);
  assert.equal(reassembler.drops.over_budget, 1);
  assert.equal(reassembler.pendingCount, 3);
  assert.ok(reassembler.pendingBytes <= maxBytes);
  // Datagram 1 (oldest) is gone: its remaining fragments start over and never complete it.
  assert.equal(reassembler.add(1, datagrams[0][1].view, datagrams[0][1].bytes), null);
  // Datagram 4 survived; completing it (evicting others as needed) returns its payload.
  const fourth = datagrams[3];
  let result: Uint8Array | null = null;
  for (const frame of fourth.slice(1)) result = reassembler.add(1, frame.view, frame.bytes);
  assert.equal(result?.length, 3000);
  assert.ok(reassembler.pendingBytes <= maxBytes);
});

Deno.test("a fragment that cannot fit even alone is dropped without evicting others", () => {
  const random = seededRandom(12);
  const reassembler = createReassembler({ maxBytes: 4000 });
  const small = fragment(1, 1, payloadOf(1500, random), 1000);
  // Chunks of 4094 bytes: one alone exceeds the 4000-byte budget.
  const big = fragment(1, 2, payloadOf(8000, random), 4100);
  reassembler.add(1, small[0].view, small[0].bytes);
  assert.equal(reassembler.add(1, big[0].view, big[0].bytes), null);
  assert.equal(reassembler.drops.over_budget, 1);
  assert.equal(reassembler.pendingCount, 1);
  assert.equal(reassembler.add(1, small[1].view, small[1].bytes)?.length, 1500);
});

Deno.test("a fragment with a different count drops the datagram as inconsistent", () => {
  const reassembler = createReassembler();
  const a = new Uint8Array([1, 1, 0, 7, 0, 2, 0xaa]);
  const b = new Uint8Array([1, 1, 0, 7, 1, 3, 0xbb]);
  assert.equal(reassembler.add(1, parseDatagram(a, a.length)!, a), null);
  assert.equal(reassembler.add(1, parseDatagram(b, b.length)!, b), null);
  assert.equal(reassembler.drops.inconsistent, 1);
  assert.equal(reassembler.pendingCount, 0);
  assert.equal(reassembler.pendingBytes, 0);
});

Deno.test("a repeated index is ignored and counted as duplicate", () => {
  const reassembler = createReassembler();
  const first = new Uint8Array([1, 1, 0, 7, 0, 2, 0xaa]);
  const again = new Uint8Array([1, 1, 0, 7, 0, 2, 0xcc]);
  const last = new Uint8Array([1, 1, 0, 7, 1, 2, 0xbb]);
  reassembler.add(1, parseDatagram(first, 7)!, first);
  assert.equal(reassembler.add(1, parseDatagram(again, 7)!, again), null);
  assert.equal(reassembler.drops.duplicate, 1);
  assert.deepEqual(reassembler.add(1, parseDatagram(last, 7)!, last), new Uint8Array([0xaa, 0xbb]));
});

Deno.test("dropFlow() forgets a flow's pending datagrams without counting drops", () => {
  const random = seededRandom(5);
  const reassembler = createReassembler();
  const one = fragment(1, 1, payloadOf(3000, random));
  const two = fragment(2, 1, payloadOf(3000, random));
  reassembler.add(1, one[0].view, one[0].bytes);
  reassembler.add(2, two[0].view, two[0].bytes);
  const before = reassembler.pendingBytes;
  reassembler.dropFlow(1);
  reassembler.dropFlow(99);
  assert.equal(reassembler.pendingCount, 1);
  assert.equal(reassembler.pendingBytes, before / 2);
  assert.equal(Object.values(reassembler.drops).reduce((s, n) => s + n, 0), 0);
});

Deno.test("createReassembler() validates its options", () => {
  assert.throws(() => createReassembler({ maxBytes: 0 }), RangeError);
  assert.throws(() => createReassembler({ timeoutMs: 0 }), {
    name: "RangeError",
    message:
      "Cannot create reassembler as 'timeoutMs' must be a positive number: current value is 0",
  });
});
