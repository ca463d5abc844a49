import assert from "node:assert/strict";
import { formatTraceparent, parseTraceparent } from "./trace.ts";

Deno.test("parseTraceparent: only well-formed version 00 values parse", () => {
  const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  assert.deepEqual(parseTraceparent(good), {
    traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
    spanId: "00f067aa0ba902b7",
    sampled: true,
  });
  assert.equal(formatTraceparent(parseTraceparent(good)!), good);
  assert.equal(parseTraceparent(good.replace(/-01$/, "-00"))?.sampled, false);
  for (
    const bad of [
      undefined,
      "",
      good.toUpperCase(),
      good + "-extra",
      "01" + good.slice(2),
      `00-${"0".repeat(32)}-00f067aa0ba902b7-01`,
      `00-4bf92f3577b34da6a3ce929d0e0e4736-${"0".repeat(16)}-01`,
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
      "<script>alert(1)</script>".padEnd(55, "x"),
    ]
  ) assert.equal(parseTraceparent(bad), null, String(bad));
});
