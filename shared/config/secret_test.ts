import assert from "node:assert/strict";
import { createLogger } from "../log.ts";
import { resolveSecret, secretRefSchema } from "./secret.ts";

const env = (vars: Record<string, string>) => (name: string) => vars[name];
const noFile = (path: string): string => {
  throw new Error(`No such file: ${path}`);
};

Deno.test("resolveSecret()", async (t) => {
  await t.step("reads env:NAME", () => {
    assert.equal(
      resolveSecret("env:TOKEN_A", env({ TOKEN_A: "value-a-1234" }), noFile),
      "value-a-1234",
    );
  });

  await t.step("reads file:/path and trims one trailing newline", () => {
    const files: Record<string, string> = {
      "/run/s1": "file-secret-1\n",
      "/run/s2": "crlf-secret\r\n",
    };
    const read = (path: string) => files[path];
    assert.equal(resolveSecret("file:/run/s1", env({}), read), "file-secret-1");
    assert.equal(resolveSecret("file:/run/s2", env({}), read), "crlf-secret");
  });

  await t.step("rejects inline values without echoing them", () => {
    assert.throws(
      () => resolveSecret("hunter2-inline", env({}), noFile),
      (error: Error) =>
        error.message ===
          "secret must be a reference env:NAME or file:/path, not an inline value",
    );
  });

  await t.step("reports unset variables, unreadable and empty files", () => {
    assert.throws(() => resolveSecret("env:MISSING", env({}), noFile), /MISSING is not set/);
    assert.throws(() => resolveSecret("env:", env({}), noFile), /must name a variable/);
    assert.throws(
      () => resolveSecret("file:/nope", env({}), noFile),
      /cannot read secret file \/nope/,
    );
    assert.throws(() => resolveSecret("file:/e", env({}), () => "\n"), /secret file \/e is empty/);
  });

  await t.step("registers the value so that logs redact it", () => {
    const lines: string[] = [];
    const secret = resolveSecret("env:T", env({ T: "resolved-secret-xyz" }), noFile);
    createLogger("test", { write: (line) => lines.push(line) }).info(`using ${secret}`);
    assert.equal(JSON.parse(lines[0]).msg, "using [redacted]");
  });
});

Deno.test("secretRefSchema() resolves at parse time and reports problems as issues", () => {
  const schema = secretRefSchema({ env: env({ PW: "schema-secret" }), readFile: noFile });
  assert.equal(schema.parse("env:PW"), "schema-secret");
  const result = schema.safeParse("inline");
  assert.match(result.error!.issues[0].message, /not an inline value/);
});
