import { deepEqual, equal, match, notEqual, ok } from "node:assert/strict";
import { certificateIssuedBy } from "../shared/identity/dev_ca.ts";
import { parseCertsArgs, UsageError } from "./certs.ts";

const SCRIPT = new URL("./certs.ts", import.meta.url).pathname;
const REPO = new URL("..", import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI as a user would: its own process, permissions scoped to the output folder. */
async function runCerts(dir: string, ...args: string[]): Promise<Run> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", `--allow-read=${dir}`, `--allow-write=${dir}`, SCRIPT, ...args],
    cwd: REPO, // where deno.json maps the npm imports
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ztna_certs_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const written = (run: Run) =>
  run.stdout.trim().split("\n").filter(Boolean).map((line) => line.replace(/^wrote .*\//, ""));

Deno.test("certs CLI writes a CA, the relay and clients, keys mode 0600", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/certs`;
    const run = await runCerts(dir, "--out", out, "--client", "connector-1", "--client", "agent-a");
    equal(run.code, 0, run.stderr);
    deepEqual(written(run), [
      "ca.pem",
      "ca.key",
      "relay.pem",
      "relay.key",
      "connector-1.pem",
      "connector-1.key",
      "agent-a.pem",
      "agent-a.key",
    ]);
    const ca = await Deno.readTextFile(`${out}/ca.pem`);
    for (const base of ["ca", "relay", "connector-1", "agent-a"]) {
      match(await Deno.readTextFile(`${out}/${base}.pem`), /^-----BEGIN CERTIFICATE-----\n/);
      match(await Deno.readTextFile(`${out}/${base}.key`), /^-----BEGIN PRIVATE KEY-----\n/);
      equal((await Deno.stat(`${out}/${base}.key`)).mode! & 0o777, 0o600, `${base}.key`);
      ok(await certificateIssuedBy(await Deno.readTextFile(`${out}/${base}.pem`), ca), base);
    }
  });
});

Deno.test("certs CLI reuses the CA and keeps existing certificates unless --force", async () => {
  await withTempDir(async (dir) => {
    equal((await runCerts(dir, "--out", dir, "--client", "a")).code, 0);
    const before = {
      ca: await Deno.readTextFile(`${dir}/ca.pem`),
      caKey: await Deno.readTextFile(`${dir}/ca.key`),
      relay: await Deno.readTextFile(`${dir}/relay.pem`),
      a: await Deno.readTextFile(`${dir}/a.pem`),
    };

    const again = await runCerts(dir, "--out", dir, "--client", "a", "--client", "b");
    equal(again.code, 0, again.stderr);
    deepEqual(written(again), ["b.pem", "b.key"]);
    match(again.stderr, /kept .*ca\.pem/);
    equal(await Deno.readTextFile(`${dir}/ca.pem`), before.ca);
    equal(await Deno.readTextFile(`${dir}/ca.key`), before.caKey);
    equal(await Deno.readTextFile(`${dir}/relay.pem`), before.relay);
    equal(await Deno.readTextFile(`${dir}/a.pem`), before.a);
    ok(await certificateIssuedBy(await Deno.readTextFile(`${dir}/b.pem`), before.ca));

    // A key left world-readable is tightened when --force rewrites it.
    await Deno.chmod(`${dir}/a.key`, 0o644);
    const forced = await runCerts(dir, "--out", dir, "--client", "a", "--force");
    equal(forced.code, 0, forced.stderr);
    deepEqual(written(forced), ["ca.pem", "ca.key", "relay.pem", "relay.key", "a.pem", "a.key"]);
    notEqual(await Deno.readTextFile(`${dir}/ca.pem`), before.ca);
    equal((await Deno.stat(`${dir}/a.key`)).mode! & 0o777, 0o600);
  });
});

Deno.test("certs CLI refuses, writing nothing, when the folder's files do not fit", async () => {
  await withTempDir(async (dir) => {
    equal((await runCerts(dir, "--out", dir, "--client", "a")).code, 0);
    // A certificate left over from another CA.
    await Deno.remove(`${dir}/ca.pem`);
    await Deno.remove(`${dir}/ca.key`);
    const orphan = await runCerts(dir, "--out", dir, "--client", "b");
    equal(orphan.code, 1);
    match(orphan.stderr, /relay\.pem was not issued by .*ca\.pem: remove it or pass --force/);
    equal(orphan.stdout, "");
    deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort(), [
      "a.key",
      "a.pem",
      "relay.key",
      "relay.pem",
    ]);
    // Half a pair.
    await Deno.remove(`${dir}/a.key`);
    await Deno.remove(`${dir}/relay.key`);
    await Deno.remove(`${dir}/relay.pem`);
    const half = await runCerts(dir, "--out", dir, "--client", "a");
    equal(half.code, 1);
    match(half.stderr, /a\.pem exists without a\.key/);
  });
});

Deno.test("certs CLI exits 2 with the usage on bad arguments", async () => {
  await withTempDir(async (dir) => {
    for (
      const args of [
        [],
        ["--client", "a"],
        ["--out", dir, "--client", "../a"],
        ["--out", dir, "--client", "relay"],
        ["--out", dir, "--client", "CA"],
        ["--out", dir, "--relay-name", "not a host"],
        ["--out", dir, "--bogus"],
        ["--out", dir, "positional"],
      ]
    ) {
      const run = await runCerts(dir, ...args);
      equal(run.code, 2, args.join(" "));
      match(run.stderr, /^certs: .+\n\nUsage: tools\/certs\.ts/, args.join(" "));
    }
    deepEqual(await Array.fromAsync(Deno.readDir(dir)), []);
    const help = await runCerts(dir, "--help");
    equal(help.code, 0);
    match(help.stdout, /^Usage: /);
  });
});

Deno.test("parseCertsArgs() deduplicates and validates", () => {
  deepEqual(
    parseCertsArgs([
      "--out=o",
      "--client",
      "a",
      "--client",
      "a",
      "--relay-name",
      "r.test",
      "--force",
    ]),
    { out: "o", clients: ["a"], relayNames: ["r.test"], force: true },
  );
  equal(parseCertsArgs(["-h"]), null);
  let caught: unknown;
  try {
    parseCertsArgs(["--out", "o", "--client", "bad name"]);
  } catch (error) {
    caught = error;
  }
  ok(caught instanceof UsageError);
  match(caught.message, /'name' must match/);
});
