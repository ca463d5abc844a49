/**
 * `deno task docs`: writes docs/CONFIG.md and docs/METRICS.md from the code.
 * `deno task docs --check`: writes nothing; exits 1 naming each file that is stale.
 *
 * @module
 */
import { renderConfigDocs } from "./config_docs.ts";
import { renderMetricsDocs } from "./metrics_docs.ts";

/** A generated file: its path from the repository root and its text. */
export interface GeneratedDoc {
  /** Path relative to the repository root. */
  path: string;
  /** The full text the file must hold. */
  text: string;
}

/** Renders every generated doc. */
export async function generatedDocs(): Promise<GeneratedDoc[]> {
  return [
    { path: "docs/CONFIG.md", text: renderConfigDocs() },
    { path: "docs/METRICS.md", text: await renderMetricsDocs() },
  ];
}

function readOrEmpty(path: URL): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "";
    throw error;
  }
}

if (import.meta.main) {
  const check = Deno.args.includes("--check");
  const unknown = Deno.args.filter((arg) => arg !== "--check");
  if (unknown.length > 0) {
    console.error(`docs: unknown argument ${unknown[0]}; usage: deno task docs [--check]`);
    Deno.exit(2);
  }
  const root = new URL("../", import.meta.url);
  let stale = 0;
  for (const { path, text } of await generatedDocs()) {
    const url = new URL(path, root);
    if (readOrEmpty(url) === text) continue;
    if (check) {
      console.error(`docs: ${path} is stale; run \`deno task docs\` and commit it`);
      stale++;
    } else {
      Deno.writeTextFileSync(url, text);
      console.log(`docs: wrote ${path}`);
    }
  }
  if (stale > 0) Deno.exit(1);
}
