import assert from "node:assert/strict";
import { fuzzTargets, runFuzz } from "./fuzz.ts";

// Fixed seed: the suite is reproducible; `deno task fuzz` explores new seeds.
const SEED = 20261122;
const CASES = 10_000;

for (const target of Object.keys(fuzzTargets)) {
  Deno.test(`fuzz ${target}: ${CASES} mutated and random inputs, every outcome counted`, () => {
    const report = runFuzz(target, CASES, SEED);
    const rejected = Object.values(report.rejected).reduce((a, b) => a + b, 0);
    assert.equal(report.accepted + rejected, CASES, "each case is accepted or a counted rejection");
    assert.ok(rejected > 0, "the mutations do reach the rejection paths");
    assert.ok(report.accepted > 0, "and some inputs stay valid");
  });
}

Deno.test("fuzz stream_chunks: split and unsplit decodes agree, rejections are only the documented framing errors", () => {
  const report = runFuzz("stream_chunks", CASES, SEED);
  assert.deepEqual(Object.keys(report.rejected).sort(), ["data_after_end", "truncated_chunk"]);
  // The reader never has to hold more than one chunk's payload.
  assert.ok(report.maxHeldBytes <= 0xffff);
});
