/**
 * Lints `.github/workflows/`: each workflow parses, declares least-privilege permissions, pins every
 * action to a version, bounds every job's time, and every `run:` script passes `bash -n`. Then
 * the contract of each: test.yml runs `.ci/run` on push and pull request with cached Deno
 * dependencies; release.yml compiles every component for every published target, checksums,
 * releases, and pushes a smoke-tested image to GHCR with provenance.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { listFiles, repoPath, run } from "./util.ts";

// deno-lint-ignore no-explicit-any
type Workflow = any;

async function load(name: string): Promise<Workflow> {
  return parse(await Deno.readTextFile(repoPath(".github/workflows", name)));
}

/** Lints one workflow; throws naming the first problem. */
export async function lintWorkflow(workflow: Workflow, name: string): Promise<void> {
  assert.ok(workflow.on, `${name}: has triggers`);
  assert.ok(workflow.permissions, `${name}: declares top-level permissions`);
  assert.notEqual(workflow.permissions, "write-all", `${name}: not write-all`);
  for (const [id, job] of Object.entries(workflow.jobs) as [string, Workflow][]) {
    assert.ok(job["runs-on"], `${name}/${id}: runs-on`);
    assert.ok(job["timeout-minutes"] > 0, `${name}/${id}: timeout-minutes`);
    for (const need of [job.needs ?? []].flat()) {
      assert.ok(need in workflow.jobs, `${name}/${id}: needs unknown job ${need}`);
    }
    for (const [index, step] of (job.steps as Workflow[]).entries()) {
      const where = `${name}/${id} step ${step.name ?? step.uses ?? index}`;
      assert.ok(!!step.uses !== !!step.run, `${where}: exactly one of uses/run`);
      if (step.uses) {
        assert.match(
          step.uses,
          /^[\w.-]+\/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$/,
          `${where}: pinned`,
        );
      } else {
        const script = String(step.run).replace(/\$\{\{[^}]*\}\}/g, "X");
        const check = await run("bash", ["-n", "-c", script]);
        assert.equal(check.code, 0, `${where}: bash -n: ${check.stderr}`);
      }
    }
  }
}

Deno.test("workflows: parse, least privilege, pinned actions, bounded jobs, valid scripts", async () => {
  const files = listFiles(repoPath(".github/workflows"), [".yml", ".yaml"]);
  assert.deepEqual(files.map((f) => f.split("/").at(-1)), ["release.yml", "test.yml"]);
  for (const file of files) {
    await lintWorkflow(parse(await Deno.readTextFile(file)), file);
  }
  // The lint catches an unpinned action and a broken script.
  const test = await load("test.yml");
  test.jobs.test.steps[0].uses = "actions/checkout@main";
  await assert.rejects(lintWorkflow(test, "broken"), /pinned/);
  const broken = await load("test.yml");
  broken.jobs.test.steps.push({ run: "if true; then echo" });
  await assert.rejects(lintWorkflow(broken, "broken"), /bash -n/);
});

Deno.test("workflows: test.yml runs .ci/run on push and pull request with a dependency cache", async () => {
  const workflow = await load("test.yml");
  assert.ok("push" in workflow.on && "pull_request" in workflow.on);
  assert.deepEqual(workflow.permissions, { contents: "read" });
  const steps: Workflow[] = workflow.jobs.test.steps;
  assert.ok(
    steps.some((s) => s.uses?.startsWith("actions/cache@") && /deno\.lock/.test(s.with.key)),
  );
  assert.ok(steps.some((s) => /install --frozen/.test(s.run ?? "")), "frozen install");
  assert.ok(steps.some((s) => /bash \.ci\/run/.test(s.run ?? "")), "runs .ci/run");
  const ci = await Deno.readTextFile(repoPath(".ci/run"));
  assert.match(ci, /deno@2\.9\.6 task test/, ".ci/run runs the test task (fmt, lint, check first)");
});

Deno.test("workflows: release.yml compiles, checksums, releases and pushes an attested image", async () => {
  const workflow = await load("release.yml");
  assert.deepEqual(workflow.on.push.tags, ["v*.*.*"]);
  const binaries = workflow.jobs.binaries;
  const targets = binaries.strategy.matrix.include.map((m: Workflow) => m.target).sort();
  assert.deepEqual(targets, [
    "aarch64-apple-darwin",
    "x86_64-apple-darwin",
    "x86_64-unknown-linux-gnu",
  ]);
  const compile = binaries.steps.find((s: Workflow) => s.name === "Compile").run as string;
  assert.match(compile, /for component in relay connector agent/);
  assert.match(compile, /--unstable-net/);
  assert.match(compile, /--frozen/);
  assert.doesNotMatch(compile, /\s(-A|--allow-all|--allow-write|--allow-run)\b/);
  assert.ok(binaries.steps.some((s: Workflow) => /readyz/.test(s.run ?? "")), "binary smoke test");

  const release = workflow.jobs["github-release"];
  assert.equal(release.permissions.contents, "write");
  assert.ok(release.steps.some((s: Workflow) => /sha256sum .*SHA256SUMS/.test(s.run ?? "")));
  assert.ok(release.steps.some((s: Workflow) => /gh release create/.test(s.run ?? "")));

  const image = workflow.jobs.image;
  assert.equal(image.permissions.packages, "write");
  const push = image.steps.find((s: Workflow) => s.id === "push");
  assert.equal(push.with.push, true);
  assert.match(String(push.with.provenance), /mode=max|true/);
  assert.match(
    image.steps.find((s: Workflow) => s.uses?.startsWith("docker/metadata-action")).with.images,
    /^ghcr\.io\//,
  );
  const smoke = image.steps.find((s: Workflow) => /Smoke/.test(s.name ?? "")).run as string;
  assert.match(smoke, /--read-only/);
  assert.match(smoke, /readyz/);
  const smokeIndex = image.steps.findIndex((s: Workflow) => /Smoke/.test(s.name ?? ""));
  assert.ok(smokeIndex < image.steps.indexOf(push), "smoke test before the push");
});
