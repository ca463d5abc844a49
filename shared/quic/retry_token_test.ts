import assert from "node:assert/strict";
import { createRetryTokens } from "./retry_token.ts";

const odcid = new Uint8Array(16).fill(7);

Deno.test("retry tokens: bound to the client address and port", () => {
  const tokens = createRetryTokens();
  const token = tokens.mint(odcid, "127.0.0.1", 5000);
  assert.deepEqual(tokens.verify(token, "127.0.0.1", 5000), odcid);
  assert.equal(tokens.verify(token, "127.0.0.2", 5000), null, "replayed from another address");
  assert.equal(tokens.verify(token, "127.0.0.1", 5001), null, "replayed from another port");
});

Deno.test("retry tokens: expire, and forged or altered tokens are refused", () => {
  let t = 1_000_000;
  const tokens = createRetryTokens({ now: () => t });
  const token = tokens.mint(odcid, "127.0.0.1", 5000);
  t += 12_000;
  assert.equal(tokens.verify(token, "127.0.0.1", 5000), null, "replayed after its lifetime");
  t -= 12_000;
  const altered = token.slice();
  altered[altered.length - 1] ^= 1;
  assert.equal(tokens.verify(altered, "127.0.0.1", 5000), null);
  const other = createRetryTokens({ now: () => t }).mint(odcid, "127.0.0.1", 5000);
  assert.equal(tokens.verify(other, "127.0.0.1", 5000), null, "minted with another key");
  assert.equal(tokens.verify(new Uint8Array(3), "127.0.0.1", 5000), null);
});
