/**
 * Checks the `Dockerfile` by parsing it (no Docker engine runs here; the release workflow builds
 * it): pinned bases, frozen dependency install, one compiled binary per component with explicit
 * permissions (never -A, no write or run access) and `--unstable-net`, a distroless non-root final
 * stage with no shell-form instruction, and the exposed ports. What the image runs is tested in
 * `deploy_rootfs_test.ts`.
 */
import assert from "node:assert/strict";
import { repoPath } from "./util.ts";

/** One Dockerfile instruction. */
export interface Instruction {
  /** Upper-cased keyword (FROM, RUN, ...). */
  keyword: string;
  /** The rest of the line, continuations joined. */
  args: string;
  /** Exec form: the JSON array, or null for shell form. */
  exec: string[] | null;
}

/** Parses a Dockerfile into instructions grouped by build stage. */
export function parseDockerfile(text: string): Instruction[][] {
  const logical: string[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (current === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.startsWith("#")) continue;
    if (line.endsWith("\\")) {
      current += line.slice(0, -1) + " ";
      continue;
    }
    logical.push(current + line);
    current = "";
  }
  assert.equal(current, "", "dangling line continuation");
  const stages: Instruction[][] = [];
  for (const line of logical) {
    const match = line.match(/^(\w+)\s+(.*)$/s);
    assert.ok(match, `not an instruction: ${line}`);
    const keyword = match[1].toUpperCase();
    const args = match[2].trim();
    let exec: string[] | null = null;
    if (args.startsWith("[")) {
      exec = JSON.parse(args);
      assert.ok(Array.isArray(exec) && exec.every((a) => typeof a === "string"), line);
    }
    if (keyword === "FROM") stages.push([]);
    assert.ok(stages.length > 0, `${keyword} before FROM`);
    stages.at(-1)!.push({ keyword, args, exec });
  }
  return stages;
}

/** Asserts everything the image must be; throws naming the first broken property. */
export function assertDockerfile(text: string): void {
  const stages = parseDockerfile(text);
  assert.ok(stages.length >= 2, "multi-stage build");
  const build = stages[0];
  const final = stages.at(-1)!;

  for (const stage of stages) {
    const from = stage[0].args.split(/\s+/)[0];
    assert.doesNotMatch(from, /:latest$/, `base ${from} pinned`);
    assert.match(from, /:[\w.-]+$|@sha256:[0-9a-f]{64}$/, `base ${from} has a tag or digest`);
  }
  assert.match(
    build[0].args,
    /^denoland\/deno:2\.9\.6\b/,
    "builder is the official Deno image 2.9.6",
  );
  assert.equal(
    final[0].args.split(/\s+/)[0],
    "gcr.io/distroless/cc-debian12:nonroot",
    "final stage on distroless cc nonroot",
  );

  const runs = build.filter((i) => i.keyword === "RUN");
  for (
    const run of stages.flatMap((s) => s).filter((i) =>
      ["RUN", "CMD", "ENTRYPOINT"].includes(i.keyword)
    )
  ) {
    assert.ok(run.exec, `${run.keyword} in exec form (no shell): ${run.args}`);
  }
  const install = runs.find((r) => r.exec![0] === "deno" && r.exec![1] === "install");
  assert.ok(install?.exec?.includes("--frozen"), "deno install --frozen from deno.lock");
  const copies = build.filter((i) => i.keyword === "COPY").map((i) => i.args);
  const installIndex = build.indexOf(install!);
  assert.ok(
    build.slice(0, installIndex).some((i) => i.keyword === "COPY" && /deno\.lock/.test(i.args)),
    "deno.lock copied before the install (cached layer)",
  );
  assert.ok(
    !build.slice(0, installIndex).some((i) =>
      i.keyword === "COPY" && /^(\.|shared|relay)\b/.test(i.args)
    ),
    "sources copied after the dependency layer",
  );
  assert.ok(copies.length > 0);

  for (const component of ["relay", "connector", "agent"]) {
    const compile = runs.find((r) =>
      r.exec![1] === "compile" && r.exec!.at(-1) === `${component}/main.ts`
    );
    assert.ok(compile, `deno compile of ${component}/main.ts`);
    const flags = compile.exec!;
    for (const flag of ["--frozen", "--unstable-net", "--allow-net", "--allow-env"]) {
      assert.ok(flags.includes(flag), `${component}: ${flag}`);
    }
    assert.ok(
      flags.some((f) => f.startsWith("--allow-read=")),
      `${component}: scoped --allow-read`,
    );
    assert.ok(flags.some((f) => f.startsWith("--allow-ffi=")), `${component}: scoped --allow-ffi`);
    for (const forbidden of ["-A", "--allow-all", "--allow-write", "--allow-run", "--allow-sys"]) {
      // The connector's one exception: listing interfaces picks each backend socket's bind.
      const allowed = component === "connector" ? ["--allow-sys=networkInterfaces"] : [];
      assert.ok(
        !flags.some((f) =>
          (f === forbidden || f.startsWith(`${forbidden}=`)) && !allowed.includes(f)
        ),
        `${component}: never ${forbidden}`,
      );
    }
    assert.ok(
      flags.includes(`/out/ztna-${component}`),
      `${component}: output /out/ztna-${component}`,
    );
  }

  assert.ok(!final.some((i) => i.keyword === "RUN"), "no RUN in the final stage (it has no shell)");
  const users = final.filter((i) => i.keyword === "USER");
  assert.match(users.at(-1)?.args ?? "", /^(65532|nonroot)(:(65532|nonroot))?$/, "runs as 65532");
  const exposed = final.filter((i) => i.keyword === "EXPOSE").flatMap((i) => i.args.split(/\s+/));
  assert.ok(exposed.includes("4433/udp"), "EXPOSE 4433/udp");
  assert.ok(exposed.some((p) => /^9090(\/tcp)?$/.test(p)), "EXPOSE 9090 (metrics)");
  const cmd = final.filter((i) => i.keyword === "CMD").at(-1);
  assert.deepEqual(cmd?.exec?.slice(0, 1), ["/usr/local/bin/ztna-relay"], "relay by default");
  assert.ok(
    final.some((i) =>
      i.keyword === "COPY" && /--from=build/.test(i.args) && /\/usr\/local\/bin\//.test(i.args)
    ),
    "the binaries are copied from the build stage",
  );
}

Deno.test("Dockerfile: pinned multi-stage build to a distroless non-root image", async () => {
  assertDockerfile(await Deno.readTextFile(repoPath("Dockerfile")));
});

Deno.test("Dockerfile: the checks fail on a broken Dockerfile", async () => {
  const text = await Deno.readTextFile(repoPath("Dockerfile"));
  const breakers: [string, string, RegExp][] = [
    ["FROM denoland/deno:2.9.6 AS build", "FROM denoland/deno:latest AS build", /pinned/],
    ["USER 65532:65532", "USER root", /65532/],
    ['RUN ["deno", "install", "--frozen"]', "RUN deno install", /exec form/],
    ['"--allow-net", "--allow-env",', '"-A", "--allow-env",', /allow-net|never -A/],
    ["EXPOSE 4433/udp", "EXPOSE 4433", /4433\/udp/],
    ["FROM gcr.io/distroless/cc-debian12:nonroot", "FROM debian:12", /distroless/],
  ];
  for (const [from, to, message] of breakers) {
    assert.ok(text.includes(from), `fixture text present: ${from}`);
    assert.throws(() => assertDockerfile(text.replace(from, to)), message, `${from} -> ${to}`);
  }
});

Deno.test(".dockerignore: keeps the host's node_modules and VCS data out of the build context", async () => {
  const lines = (await Deno.readTextFile(repoPath(".dockerignore"))).split("\n").map((l) =>
    l.trim()
  );
  for (const entry of ["node_modules", ".git", ".state"]) {
    assert.ok(lines.includes(entry), `.dockerignore lists ${entry}`);
  }
  for (const kept of ["deno.json", "deno.lock", "relay", "shared", "connector", "agent"]) {
    assert.ok(!lines.includes(kept), `${kept} stays in the build context`);
  }
});
