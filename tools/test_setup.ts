/**
 * The setup step of `deno task test`: makes sure every host program the tests drive is
 * installed. As root with apt-get, missing Debian packages are installed; otherwise it stops
 * before the tests with one list of what to install (exit 1). Host properties some test
 * needs (root, namespaces) are checked after the programs and listed the same way. No test is
 * skipped for a missing tool.
 *
 * @module
 */
import { hasTool, HOST_CAPABILITIES, HOST_TOOLS } from "./host_tools.ts";

function missingTools() {
  return HOST_TOOLS.filter((tool) => !hasTool(tool.command));
}

async function aptGet(args: string[]): Promise<boolean> {
  const status = await new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "null",
    stderr: "inherit",
  }).spawn().status;
  return status.success;
}

let missing = missingTools();
const packages = [...new Set(missing.flatMap((t) => t.debian === null ? [] : [t.debian]))];
if (packages.length > 0 && Deno.uid() === 0 && hasTool("apt-get")) {
  console.log(`test setup: installing ${packages.join(" ")} (apt-get)`);
  const installed = await aptGet(["update", "-qq"]) &&
    await aptGet(["install", "-y", "-qq", "--no-install-recommends", ...packages]);
  if (!installed) console.error("test setup: apt-get failed");
  missing = missingTools();
}
const lacking = HOST_CAPABILITIES.filter((capability) => !capability.present());
if (missing.length > 0 || lacking.length > 0) {
  console.error("test setup: the tests need these, which are missing:");
  for (const tool of missing) {
    console.error(
      `  ${tool.command}: ${
        tool.debian === null ? `not in Debian, see ${tool.hint}` : `apt-get install ${tool.debian}`
      }`,
    );
  }
  for (const capability of lacking) console.error(`  ${capability.name}: ${capability.hint}`);
  Deno.exit(1);
}
