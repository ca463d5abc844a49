/**
 * The host programs the test suite drives (real DNS servers, Prometheus, PostgreSQL, ansible,
 * systemd-analyze, network tools, a headless Chromium), with the Debian packages that provide them: one list for
 * the test setup step (`deno task test:setup`) and for the tests that run them.
 *
 * @module
 */
import { join } from "node:path";

/** A program the tests run, and where it comes from. */
export interface HostTool {
  /** The executable looked up on the PATH (or an absolute path). */
  command: string;
  /** The Debian package providing it, or null when Debian has none. */
  debian: string | null;
  /** Where to get it when Debian has no package. */
  hint?: string;
}

/** Every program some test runs. */
export const HOST_TOOLS: readonly HostTool[] = [
  { command: "dnsmasq", debian: "dnsmasq-base" },
  { command: "dig", debian: "bind9-dnsutils" },
  { command: "curl", debian: "curl" },
  { command: "prometheus", debian: "prometheus" },
  { command: "promtool", debian: "prometheus" },
  { command: "ansible", debian: "ansible" },
  { command: "ansible-playbook", debian: "ansible" },
  { command: "ansible-lint", debian: "ansible-lint" },
  { command: "systemd-analyze", debian: "systemd" },
  { command: "psql", debian: "postgresql" },
  { command: "ss", debian: "iproute2" },
  { command: "ip", debian: "iproute2" },
  { command: "prlimit", debian: "util-linux" },
  { command: "unshare", debian: "util-linux" },
  { command: "ldd", debian: "libc-bin" },
  { command: "kubectl", debian: "kubernetes-client" },
  // Headless, to load the ops listener's /status page as a browser does.
  { command: "chromium", debian: "chromium" },
  { command: "openssl", debian: "openssl" },
  {
    command: "terraform",
    debian: null,
    hint: "https://developer.hashicorp.com/terraform/install",
  },
];

/** Whether an executable of this name is on the PATH. */
export function hasTool(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      const info = Deno.statSync(join(dir, name));
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) return true;
    } catch {
      // not in this folder
    }
  }
  return false;
}

/**
 * Throws, naming what to install, when one of `commands` is missing: a test that needs a tool
 * fails rather than being skipped (`deno task test` installs them first).
 */
export function requireTools(commands: string[]): void {
  const missing = commands.filter((command) => !hasTool(command));
  if (missing.length === 0) return;
  const packages = HOST_TOOLS.filter((t) => missing.includes(t.command) && t.debian !== null)
    .map((t) => t.debian);
  throw new Error(
    `missing ${missing.join(", ")}: run \`deno task test:setup\` as root, or apt-get install ${
      [...new Set(packages)].join(" ")
    }`,
  );
}

/** A property of the host, not a program, that some test needs. */
export interface HostCapability {
  /** Short name, e.g. `root`. */
  name: string;
  /** Which test needs it and how to provide it. */
  hint: string;
  /** Whether this host has it. */
  present(): boolean;
}

/** Every host property some test needs; the setup step stops when one is missing. */
export const HOST_CAPABILITIES: readonly HostCapability[] = [
  {
    name: "linux",
    hint: "test/deploy/rootfs_test.ts runs the relay in Linux mount and pid namespaces",
    present: () => Deno.build.os === "linux",
  },
  {
    name: "root",
    hint: "run the tests as root (uid 0): test/deploy/rootfs_test.ts chroots and switches to " +
      "uid 65532",
    present: () => Deno.uid() === 0,
  },
  {
    name: "namespaces",
    hint: "`unshare --mount --pid --fork --mount-proc true` must succeed (a container needs " +
      "CAP_SYS_ADMIN, e.g. --privileged)",
    present: () => {
      if (Deno.build.os !== "linux" || !hasTool("unshare")) return false;
      const probe = new Deno.Command("unshare", {
        args: ["--mount", "--pid", "--fork", "--mount-proc", "true"],
        stdout: "null",
        stderr: "null",
      }).outputSync();
      return probe.code === 0;
    },
  },
];

/**
 * Throws, naming each missing host property and how to provide it, when one of `names` is
 * missing: like {@linkcode requireTools}, a test fails rather than being skipped.
 */
export function requireCapabilities(names: string[]): void {
  const missing = HOST_CAPABILITIES.filter((c) => names.includes(c.name) && !c.present());
  if (missing.length === 0) return;
  throw new Error(
    `this host lacks ${missing.map((c) => `${c.name} (${c.hint})`).join("; ")}`,
  );
}
