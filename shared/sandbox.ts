/**
 * The sandbox self-check: at startup a component asks Deno which permissions it holds and
 * compares them with what its config needs (`tools/permissions.ts` derives exactly that set).
 * Anything more — `-A`, unscoped network on a connector or agent, write access beyond its
 * audit files, run access, unscoped read/env/ffi/sys — is logged as a warning, or refused with exit status 2 under
 * `--strict-sandbox` (config key `strict_sandbox`).
 *
 * It also answers, per destination, whether the sandbox lets this process reach an address,
 * so a connector can refuse a flow cleanly instead of failing on its first send.
 *
 * @module
 */
import { dirname } from "node:path";
import { formatHostPort } from "./config/address.ts";
import type { Logger } from "./log.ts";
import { libcPath } from "./quic/libc.ts";

/** A permission this process holds that its config does not need. */
export type ExcessPermission =
  | "net"
  | "read"
  | "write"
  | "run"
  | "env"
  | "ffi"
  | "sys"
  | "import";

/** Options for {@linkcode excessPermissions}. */
export interface SandboxCheckOptions {
  /**
   * Whether the component may hold unscoped network access: only the relay, which answers
   * peers from anywhere.
   */
  unscopedNet: boolean;
  /**
   * Whether the process may call libc through FFI (the batched UDP socket): false when the
   * config asks for the portable socket, so a grant for it is excess.
   *
   * @default {true}
   */
  libcNeeded?: boolean;
  /**
   * Paths whose write access is looked for (write access cannot be listed, only probed):
   * the config file, certificates and their folders are where an attacker would write.
   *
   * @default {[]}
   */
  writeProbes?: string[];
  /**
   * The files the component may write (its audit files, live and rotated). Their folders are
   * probed too: a grant on the folder is wider than the files need.
   *
   * @default {[]}
   */
  allowedWrites?: string[];
  /**
   * Answers whether a permission is granted.
   *
   * @default {Deno.permissions.querySync(...).state === "granted"}
   */
  granted?: (descriptor: Deno.PermissionDescriptor) => boolean;
}

const denoGranted = (descriptor: Deno.PermissionDescriptor): boolean =>
  Deno.permissions.querySync(descriptor).state === "granted";

/**
 * The permissions this process holds beyond what it needs, in a fixed order.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { excessPermissions } from "./sandbox.ts";
 *
 * // As if run with -A:
 * const all = excessPermissions({ unscopedNet: false, granted: () => true });
 * assert.deepEqual(all, ["net", "read", "write", "run", "env", "ffi", "sys", "import"]);
 * assert.deepEqual(excessPermissions({ unscopedNet: true, granted: () => false }), []);
 * ```
 *
 * @param options What the component may hold and how to ask.
 * @returns The excess permissions; empty when the sandbox is as narrow as derived.
 */
export function excessPermissions(options: SandboxCheckOptions): ExcessPermission[] {
  const {
    unscopedNet,
    writeProbes = [],
    allowedWrites = [],
    granted = denoGranted,
    libcNeeded = true,
  } = options;
  const excess: ExcessPermission[] = [];
  if (!unscopedNet && granted({ name: "net" })) excess.push("net");
  if (granted({ name: "read" })) excess.push("read");
  // Nothing but the audit files is written: any other write grant is excess. Probe likely
  // targets too, since a scoped grant (--allow-write=/etc/ztna) does not show on the unscoped
  // query.
  const writeTargets = new Set<string>();
  for (const path of [...writeProbes, ...allowedWrites]) {
    writeTargets.add(path);
    writeTargets.add(dirname(path));
  }
  writeTargets.add("/tmp");
  for (const path of allowedWrites) writeTargets.delete(path);
  if (
    granted({ name: "write" }) ||
    [...writeTargets].some((path) => granted({ name: "write", path }))
  ) {
    excess.push("write");
  }
  if (granted({ name: "run" })) excess.push("run");
  if (granted({ name: "env" })) excess.push("env");
  const libc = libcPath();
  if (
    granted({ name: "ffi" }) ||
    (!libcNeeded && libc !== null && granted({ name: "ffi", path: libc }))
  ) {
    excess.push("ffi");
  }
  if (granted({ name: "sys" })) excess.push("sys");
  if (granted({ name: "import" })) excess.push("import");
  return excess;
}

/** Options for {@linkcode checkSandbox}. */
export interface CheckSandboxOptions extends SandboxCheckOptions {
  /** Component name, for messages. */
  component: "relay" | "connector" | "agent";
  logger: Logger;
  /** Refuse to start (exit 2) rather than warn. */
  strict: boolean;
  /**
   * Exits the process; injectable for tests.
   *
   * @default {Deno.exit}
   */
  exit?: (code: number) => void;
}

/**
 * Runs {@linkcode excessPermissions} and acts on the result: nothing when the sandbox is
 * tight, a warning line otherwise, or (when `strict`) an error line and exit status 2.
 * Call it before anything binds.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLogger } from "./log.ts";
 * import { checkSandbox } from "./sandbox.ts";
 *
 * const lines: string[] = [];
 * const codes: number[] = [];
 * checkSandbox({
 *   component: "connector",
 *   logger: createLogger("connector", { write: (l) => lines.push(l) }),
 *   strict: true,
 *   unscopedNet: false,
 *   granted: (d) => d.name === "run",
 *   exit: (code) => void codes.push(code),
 * });
 * assert.deepEqual(codes, [2]);
 * assert.deepEqual(JSON.parse(lines[0]).excess, ["run"]);
 * ```
 *
 * @param options The component, its logger, strictness and what it may hold.
 * @returns The excess permissions found.
 */
export function checkSandbox(options: CheckSandboxOptions): ExcessPermission[] {
  const { component, logger, strict, exit = Deno.exit } = options;
  const excess = excessPermissions(options);
  if (excess.length === 0) return excess;
  const fields = {
    excess,
    hint: `start it with the flags printed by: deno task permissions ${component} --config FILE`,
  };
  if (strict) {
    logger.error("sandbox wider than the config needs: refusing to start (strict_sandbox)", fields);
    exit(2);
  } else {
    logger.warn("sandbox wider than the config needs", fields);
  }
  return excess;
}

/**
 * Whether this process may send to / connect to `host:port` (an IP literal or name exactly
 * as it will be used). Deno matches the literal host before DNS, as the send itself does.
 *
 * @example Usage
 * ```ts
 * import { netPermitted } from "./sandbox.ts";
 *
 * // A query only: nothing is sent, and no prompt appears.
 * if (!netPermitted("10.0.0.53", 53)) console.log("backend outside the sandbox: refuse the flow");
 * ```
 *
 * @param host Host as the socket will use it.
 * @param port Port.
 * @returns True when granted.
 */
export function netPermitted(host: string, port: number): boolean {
  try {
    return denoGranted({ name: "net", host: formatHostPort({ host, port }) });
  } catch {
    // A descriptor Deno cannot parse cannot be granted either.
    return false;
  }
}
