/**
 * `deno task test`'s runner: every test module and JSDoc example, in as few `deno test`
 * processes as is safe.
 *
 * Test modules that drive QUIC connections inside the test process (their import graph
 * reaches `shared/quic/server.ts`, `client.ts` or `e2e_session.ts`) each get a process of their own;
 * everything else runs in one `deno test --parallel --doc`. The reason: `deno test` runs each
 * module on its own thread with its own V8 isolate, and with quiche's Node-API addon busy in
 * several isolates of one process, Deno 2.9.6 died now and then after those modules
 * (SIGSEGV in a `tokio-runtime-worker` thread, or V8's "Check failed: node->IsInUse()"), about
 * one full run in three. One isolate per process never did.
 *
 * Usage: `deno run --allow-read=. --allow-run=<deno> tools/run_tests.ts [extra deno test flags]`.
 * Exits with the first failing process's status, after running them all.
 *
 * @module
 */
import { dirname, join, relative, resolve } from "node:path";
import { PROJECT_ROOT } from "./permissions.ts";

/** Files whose presence in a module's import graph puts it in a process of its own. */
const ENDPOINTS = ["shared/quic/server.ts", "shared/quic/client.ts", "shared/quic/e2e_session.ts"]
  .map((p) => join(PROJECT_ROOT, p));
const SKIP_DIRS = new Set(["node_modules", ".git", ".state"]);

/** Every `*_test.ts` below `root`, sorted, as `deno test` would find them. */
export function testModules(root: string = PROJECT_ROOT): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory && !SKIP_DIRS.has(entry.name)) walk(path);
      else if (entry.isFile && /_test\.ts$/.test(entry.name)) found.push(path);
    }
  };
  walk(root);
  return found.sort();
}

const IMPORT =
  /(?:import|export)\s[^;]*?from\s+"(\.{1,2}\/[^"]+)"|import\(\s*"(\.{1,2}\/[^"]+)"\s*\)/g;

/**
 * Whether `file` reaches any of `targets` through relative imports (type-only imports
 * included, which over-approximates: such a module merely runs alone). Results are cached
 * in `seen` across calls.
 */
export function reaches(
  file: string,
  targets: readonly string[],
  seen: Map<string, boolean> = new Map(),
): boolean {
  if (targets.includes(file)) return true;
  const known = seen.get(file);
  if (known !== undefined) return known;
  seen.set(file, false); // cycles end here
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch {
    return false;
  }
  for (const match of text.matchAll(IMPORT)) {
    const spec = match[1] ?? match[2];
    if (reaches(resolve(dirname(file), spec), targets, seen)) {
      seen.set(file, true);
      return true;
    }
  }
  return false;
}

/** The test modules that must run in a process of their own. */
export function modulesAlone(modules: string[]): string[] {
  const seen = new Map<string, boolean>();
  return modules.filter((m) => reaches(m, ENDPOINTS, seen));
}

async function run(args: string[]): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: PROJECT_ROOT,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return (await child.status).code;
}

if (import.meta.main) {
  const extra = Deno.args;
  const alone = modulesAlone(testModules());
  const rel = (p: string) => relative(PROJECT_ROOT, p);
  console.log(
    `run_tests: ${alone.length} modules with in-process QUIC endpoints run one process each ` +
      `(${alone.map(rel).join(", ")}); the rest and the JSDoc examples share one`,
  );
  const base = ["test", "--allow-all", ...extra];
  const codes: number[] = [];
  // Everything else, found as a bare `deno test` finds it, with the JSDoc examples.
  codes.push(await run([...base, "--parallel", "--doc", `--ignore=${alone.map(rel).join(",")}`]));
  for (const module of alone) codes.push(await run([...base, rel(module)]));
  const failed = codes.filter((c) => c !== 0).length;
  console.log(`run_tests: ${codes.length - failed} of ${codes.length} test processes passed`);
  Deno.exit(codes.find((c) => c !== 0) ?? 0);
}
