import { deepEqual, equal, match, notEqual, ok, throws } from "node:assert/strict";
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

/** The files a run wrote, relative to `dir`. */
const written = (run: Run, dir: string) =>
  run.stdout.trim().split("\n").filter(Boolean).map((line) => line.replace(`wrote ${dir}/`, ""));

Deno.test("certs CLI writes the CA apart from the identities, keys mode 0600", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/certs`;
    const run = await runCerts(dir, "--out", out, "--client", "connector-1", "--client", "agent-a");
    equal(run.code, 0, run.stderr);
    deepEqual(written(run, dir), [
      "certs-ca/ca.pem",
      "certs-ca/ca.key",
      "certs/ca.pem",
      "certs/relay.pem",
      "certs/relay.key",
      "certs/connector-1.pem",
      "certs/connector-1.key",
      "certs/agent-a.pem",
      "certs/agent-a.key",
    ]);
    // Nothing that mounts or copies the identities' folder can carry the CA key.
    deepEqual(
      (await Array.fromAsync(Deno.readDir(out))).map((e) => e.name).filter((n) =>
        n.startsWith("ca")
      ),
      ["ca.pem"],
    );
    equal((await Deno.stat(`${dir}/certs-ca`)).mode! & 0o777, 0o700, "CA folder");
    equal((await Deno.stat(`${dir}/certs-ca/ca.key`)).mode! & 0o777, 0o600, "ca.key");
    const ca = await Deno.readTextFile(`${out}/ca.pem`);
    equal(await Deno.readTextFile(`${dir}/certs-ca/ca.pem`), ca);
    for (const base of ["relay", "connector-1", "agent-a"]) {
      match(await Deno.readTextFile(`${out}/${base}.pem`), /^-----BEGIN CERTIFICATE-----\n/);
      match(await Deno.readTextFile(`${out}/${base}.key`), /^-----BEGIN PRIVATE KEY-----\n/);
      equal((await Deno.stat(`${out}/${base}.key`)).mode! & 0o777, 0o600, `${base}.key`);
      ok(await certificateIssuedBy(await Deno.readTextFile(`${out}/${base}.pem`), ca), base);
    }
  });
});

Deno.test("certs CLI reuses the CA and keeps existing certificates unless --force", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/out`;
    const caDir = `${dir}/ca`;
    const args = ["--out", out, "--ca-dir", caDir];
    equal((await runCerts(dir, ...args, "--client", "a")).code, 0);
    const before = {
      ca: await Deno.readTextFile(`${caDir}/ca.pem`),
      caKey: await Deno.readTextFile(`${caDir}/ca.key`),
      relay: await Deno.readTextFile(`${out}/relay.pem`),
      a: await Deno.readTextFile(`${out}/a.pem`),
    };

    const again = await runCerts(dir, ...args, "--client", "a", "--client", "b");
    equal(again.code, 0, again.stderr);
    deepEqual(written(again, dir), ["out/ca.pem", "out/b.pem", "out/b.key"]);
    match(again.stderr, /kept .*ca\/ca\.pem/);
    equal(await Deno.readTextFile(`${caDir}/ca.pem`), before.ca);
    equal(await Deno.readTextFile(`${out}/ca.pem`), before.ca);
    equal(await Deno.readTextFile(`${caDir}/ca.key`), before.caKey);
    equal(await Deno.readTextFile(`${out}/relay.pem`), before.relay);
    equal(await Deno.readTextFile(`${out}/a.pem`), before.a);
    ok(await certificateIssuedBy(await Deno.readTextFile(`${out}/b.pem`), before.ca));

    // A key left world-readable is tightened when --force rewrites it.
    await Deno.chmod(`${out}/a.key`, 0o644);
    const forced = await runCerts(dir, ...args, "--client", "a", "--force");
    equal(forced.code, 0, forced.stderr);
    deepEqual(written(forced, dir), [
      "ca/ca.pem",
      "ca/ca.key",
      "out/ca.pem",
      "out/relay.pem",
      "out/relay.key",
      "out/a.pem",
      "out/a.key",
    ]);
    notEqual(await Deno.readTextFile(`${caDir}/ca.pem`), before.ca);
    equal((await Deno.stat(`${out}/a.key`)).mode! & 0o777, 0o600);
  });
});

Deno.test("certs CLI refuses, writing nothing, when the folders' files do not fit", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/out`;
    equal((await runCerts(dir, "--out", out, "--client", "a")).code, 0);
    // A certificate left over from another CA.
    await Deno.remove(`${out}-ca`, { recursive: true });
    await Deno.remove(`${out}/ca.pem`);
    const orphan = await runCerts(dir, "--out", out, "--client", "b");
    equal(orphan.code, 1);
    match(orphan.stderr, /relay\.pem was not issued by .*ca\.pem: remove it or pass --force/);
    equal(orphan.stdout, "");
    deepEqual((await Array.fromAsync(Deno.readDir(out))).map((e) => e.name).sort(), [
      "a.key",
      "a.pem",
      "relay.key",
      "relay.pem",
    ]);
    // Half a pair.
    await Deno.remove(`${out}/a.key`);
    await Deno.remove(`${out}/relay.key`);
    await Deno.remove(`${out}/relay.pem`);
    const half = await runCerts(dir, "--out", out, "--client", "a");
    equal(half.code, 1);
    match(half.stderr, /a\.pem exists without a\.key/);
    // The old layout: a CA key beside the identities is not written next to again.
    await Deno.remove(`${out}/a.pem`);
    await Deno.writeTextFile(`${out}/ca.key`, "old");
    const old = await runCerts(dir, "--out", out, "--client", "a");
    equal(old.code, 1);
    match(old.stderr, /ca\.key sits beside the identities' keys: move it/);
  });
});

/** Runs `deno task certs` exactly as the README says, from the checkout. */
async function runTask(...args: string[]): Promise<Run> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "certs", ...args],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

Deno.test("deno task certs writes to any folder an operator names, outside the checkout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ztna_certs_task_" });
  try {
    const run = await runTask("--out", `${dir}/tls`, "--client", "a");
    equal(run.code, 0, run.stderr);
    ok((await Deno.stat(`${dir}/tls/a.key`)).isFile);
    ok((await Deno.stat(`${dir}/tls-ca/ca.key`)).isFile);
    equal((await Deno.stat(`${dir}/tls-ca`)).mode! & 0o777, 0o700, "CA folder");
    equal((await Deno.stat(`${dir}/tls-ca/ca.key`)).mode! & 0o777, 0o600, "ca.key");
    deepEqual(
      (await Array.fromAsync(Deno.readDir(`${dir}/tls`))).map((e) => e.name).sort(),
      ["a.key", "a.pem", "ca.pem", "relay.key", "relay.pem"],
    );
    // A folder that cannot be created is one line naming its flag, not a stack trace.
    await Deno.writeTextFile(`${dir}/file`, "");
    for (
      const [flag, args] of [
        ["--out", ["--out", `${dir}/file/tls`]],
        ["--ca-dir", ["--out", `${dir}/tls`, "--ca-dir", `${dir}/file/ca`]],
      ] as const
    ) {
      const failed = await runTask(...args);
      equal(failed.code, 1, flag);
      match(
        failed.stderr,
        new RegExp(`^certs: cannot create the ${flag} folder ${dir}/file/`, "m"),
      );
      ok(!/^\s+at /m.test(failed.stderr), `no stack trace: ${failed.stderr}`);
    }
    // --ca-dir may not be the identities' folder (nor inside it: see the usage test).
    const same = await runCerts(dir, "--out", `${dir}/tls`, "--ca-dir", `${dir}/tls/`);
    equal(same.code, 2);
    match(same.stderr, /--ca-dir must not be the --out folder/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
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
        ["--out", `${dir}/o`, "--ca-dir", `${dir}/o/ca`],
        ["--out", `${dir}/o`, "--ca-dir", `${dir}/x/../o/./ca`],
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
    { out: "o", caDir: "o-ca", clients: ["a"], relayNames: ["r.test"], force: true },
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
  // A folder whose name starts with ".." is inside --out; one beside or above it is apart.
  throws(() => parseCertsArgs(["--out", "o", "--ca-dir", "o/..ca"]), /inside it/);
  equal(parseCertsArgs(["--out", "o", "--ca-dir", "..ca"])?.caDir, "..ca");
  equal(parseCertsArgs(["--out", "o/tls", "--ca-dir", "o"])?.caDir, "o");
});
