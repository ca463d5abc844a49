/**
 * Starts a component inside its sandbox: derives its permission flags from its config
 * (see `permissions.ts`), runs it as a child `deno run` with exactly those flags, forwards
 * signals (TERM, INT, HUP) and exits with the child's status.
 *
 * This launcher itself may read files, read the environment and run only the deno binary
 * (the connector's also lists the network interfaces, to derive its backend binds); it has
 * no network, write or FFI access. Host names in the config are resolved by a child
 * that may look up exactly those names. `deno task relay|connector|agent` use it.
 *
 * @module
 */
import {
  componentArg,
  dialedNames,
  loadComponentConfigOrExit,
  resolveNames,
  runArgs,
} from "./permissions.ts";

const usage = "usage: deno task <relay|connector|agent> --config FILE [--key value ...]";
const component = componentArg(Deno.args, usage);
const args = Deno.args.slice(1);
const { config, configPath } = loadComponentConfigOrExit(component, args);
const resolved = await resolveNames(dialedNames(component, config));

const child = new Deno.Command(Deno.execPath(), {
  args: runArgs(component, config, configPath, args, resolved),
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
