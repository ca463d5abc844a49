/**
 * Helpers shared by the deployment tests (`test/deploy_*_test.ts`): the repository root, running
 * a tool and collecting its output, and deciding whether a tool the test needs is installed.
 *
 * `.ci/run` installs every tool these tests use, so in CI (`CI` set) a missing tool is a failure;
 * on a developer machine the test is skipped with a printed reason instead.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** Absolute path of the repository root. */
export const ROOT: string = fileURLToPath(new URL("../..", import.meta.url));

/** Absolute path of a file in the repository. */
export function repoPath(...parts: string[]): string {
  return join(ROOT, ...parts);
}

/** The outcome of one finished command. */
export interface CommandResult {
  /** Exit code. */
  code: number;
  /** Standard output as text. */
  stdout: string;
  /** Standard error as text. */
  stderr: string;
}

/**
 * Runs a command to completion and returns its exit code and output.
 *
 * @param cmd The program.
 * @param args Its arguments.
 * @param options Working directory and extra environment.
 */
export async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<CommandResult> {
  const { cwd = ROOT, env = {} } = options;
  const output = await new Deno.Command(cmd, {
    args,
    cwd,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Every file under a folder (recursively) whose name ends with one of the suffixes. */
export function listFiles(dir: string, suffixes: string[]): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) found.push(...listFiles(path, suffixes));
    else if (suffixes.some((suffix) => entry.name.endsWith(suffix))) found.push(path);
  }
  return found.sort();
}
