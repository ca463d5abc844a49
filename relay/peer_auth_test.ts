import assert from "node:assert/strict";
import { tokenHashText, tokensSchema } from "../shared/config/tokens.ts";
import { createPeerAuth } from "./peer_auth.ts";

const tokens = tokensSchema({ env: () => "connector-env-token" }).parse({
  "agent-1": [tokenHashText("agent-1-old"), tokenHashText("agent-1-new")],
  "connector-1": ["env:CONNECTOR_TOKEN"],
});

Deno.test("createPeerAuth: mtls ignores tokens and needs a certificate identity", () => {
  const auth = createPeerAuth("mtls", tokens);
  assert.deepEqual(auth.authenticate("alice", undefined), { identity: "alice" });
  assert.deepEqual(auth.authenticate(null, "agent-1-old"), { failure: "no_identity" });
});

Deno.test("createPeerAuth: token mode names the identity by its token", () => {
  const auth = createPeerAuth("token", tokens);
  assert.deepEqual(auth.authenticate(null, "agent-1-old"), { identity: "agent-1" });
  assert.deepEqual(auth.authenticate(null, "agent-1-new"), { identity: "agent-1" });
  assert.deepEqual(auth.authenticate(null, "connector-env-token"), { identity: "connector-1" });
  assert.deepEqual(auth.authenticate(null, undefined), { failure: "missing_token" });
  assert.deepEqual(auth.authenticate(null, "agent-1-ol"), { failure: "bad_token" });
});

Deno.test("createPeerAuth: mtls+token needs the token of the certificate's identity", () => {
  const auth = createPeerAuth("mtls+token", tokens);
  assert.deepEqual(auth.authenticate("agent-1", "agent-1-new"), { identity: "agent-1" });
  // Another identity's valid token does not do.
  assert.deepEqual(auth.authenticate("agent-1", "connector-env-token"), { failure: "bad_token" });
  assert.deepEqual(auth.authenticate("agent-1", undefined), { failure: "missing_token" });
  assert.deepEqual(auth.authenticate(null, "agent-1-new"), { failure: "no_identity" });
});

Deno.test("createPeerAuth: setTokens rotates the accepted set", () => {
  const auth = createPeerAuth("token", tokens);
  auth.setTokens(tokensSchema().parse({ "agent-1": [tokenHashText("agent-1-new")] }));
  assert.deepEqual(auth.authenticate(null, "agent-1-old"), { failure: "bad_token" });
  assert.deepEqual(auth.authenticate(null, "agent-1-new"), { identity: "agent-1" });
});

Deno.test("tokensSchema: rejects inline tokens, bad hashes and a token shared by two identities", () => {
  const schema = tokensSchema({ env: () => "same-token-value" });
  assert.equal(schema.safeParse({ a: ["plain-token"] }).success, false);
  assert.equal(schema.safeParse({ a: ["sha256:abc"] }).success, false);
  assert.equal(schema.safeParse({ a: [] }).success, false);
  const shared = schema.safeParse({ a: ["env:A"], b: [tokenHashText("same-token-value")] });
  assert.match(shared.error!.issues[0].message, /also listed for "a"/);
  // The error never echoes what was pasted inline.
  const inline = schema.safeParse({ a: ["hunter2-inline"] });
  assert.ok(!JSON.stringify(inline.error!.issues).includes("hunter2-inline"));
});
