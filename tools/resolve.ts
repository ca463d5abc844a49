/**
 * Resolves host names for the sandbox launcher, in a process that may look up exactly those
 * names and nothing else: `deno run --allow-net=a.example,b.example tools/resolve.ts a.example
 * b.example` prints `{"a.example":["10.0.0.1"],...}`. Names that do not resolve map to [].
 *
 * @module
 */
import { resolveAll } from "../shared/resolve_host.ts";

if (import.meta.main) {
  const entries = await Promise.all(
    Deno.args.map(async (name) => [name, await resolveAll(name).catch(() => [])] as const),
  );
  console.log(JSON.stringify(Object.fromEntries(entries)));
}
