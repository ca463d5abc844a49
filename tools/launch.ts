/**
 * Starts a component inside its sandbox: derives its permission flags from its config
 * (see `permissions.ts`), runs it as a child `deno run` with exactly those flags, forwards
 * signals (TERM, INT, HUP) and exits with the child's status.
 *
 * This launcher itself may read files, read the environment and run only the deno binary;
 * it has no network, write or FFI access. `deno task relay|connector|agent` use it.
 *
 * @module
 */
import { componentArg, componentEnv, loadComponentConfig, runArgs } from "./permissions.ts";

const usage = "usage: deno task <relay|connector|agent> --config FILE [--key value ...]";
const component = componentArg(Deno.args, usage);
const args = Deno.args.slice(1);
let loaded;
try {
  loaded = loadComponentConfig(component, args, componentEnv(component));
} catch (error) {
  // Same message and exit code the component itself gives, before anything starts.
  console.error(`ztna ${component}: invalid config: ${(error as Error).message}`);
  Deno.exit(2);
}

const child = new Deno.Command(Deno.execPath(), {
  args: runArgs(component, loaded.config, loaded.configPath, args),
  stdin: "null",
}).spawn();

const signals: Deno.Signal[] = ["SIGTERM", "SIGINT", "SIGHUP"];
for (const signal of signals) {
  Deno.addSignalListener(signal, () => {
    try {
      child.kill(signal);
    } catch {
      // The child already exited; its status is on its way.
    }
  });
}
const status = await child.status;
Deno.exit(status.signal ? 128 + (status.signal === "SIGKILL" ? 9 : 15) : status.code);
