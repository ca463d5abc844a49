/**
 * Helpers for checking systemd units: a small unit-file parser, the hardening assertions every
 * ztna unit must pass, and `systemd-analyze verify` in a throwaway root.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { run } from "./util.ts";

/** The three components, each with a unit `ztna-<component>.service`. */
export const COMPONENTS = ["relay", "connector", "agent"] as const;

/** A unit file as section name -> list of [key, value] in file order. */
export type UnitFile = Map<string, [string, string][]>;

/** Parses a systemd unit file (comments and blank lines dropped, no line continuations). */
export function parseUnit(text: string): UnitFile {
  const unit: UnitFile = new Map();
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = line.match(/^\[(.+)\]$/);
    if (header) {
      section = header[1];
      unit.set(section, unit.get(section) ?? []);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(eq > 0 && section !== "", `not a unit-file line: ${line}`);
    unit.get(section)!.push([line.slice(0, eq), line.slice(eq + 1)]);
  }
  return unit;
}

/** The last value of a key in a section (systemd's "last one wins"), or undefined. */
export function unitValue(unit: UnitFile, section: string, key: string): string | undefined {
  return unit.get(section)?.findLast(([k]) => k === key)?.[1];
}

/** Asserts the hardening and lifecycle directives every ztna unit must carry. */
export function assertHardened(unit: UnitFile, name: string): void {
  const expect: Record<string, string> = {
    NoNewPrivileges: "yes",
    ProtectSystem: "strict",
    ProtectHome: "yes",
    PrivateTmp: "yes",
    PrivateDevices: "yes",
    CapabilityBoundingSet: "",
    AmbientCapabilities: "",
    RestrictAddressFamilies: "AF_INET AF_INET6 AF_UNIX",
    SystemCallFilter: "@system-service",
    RestrictSUIDSGID: "yes",
    LockPersonality: "yes",
    ExecReload: "/bin/kill -HUP $MAINPID",
    KillSignal: "SIGTERM",
    Restart: "on-failure",
  };
  for (const [key, value] of Object.entries(expect)) {
    assert.equal(unitValue(unit, "Service", key), value, `${name}: [Service] ${key}`);
  }
  const user = unitValue(unit, "Service", "User");
  const dynamic = unitValue(unit, "Service", "DynamicUser");
  assert.ok(
    dynamic === "yes" || (user !== undefined && user !== "root" && user !== "0"),
    `${name}: runs as DynamicUser or a dedicated non-root user`,
  );
  const stop = Number(unitValue(unit, "Service", "TimeoutStopSec"));
  // The process bounds its own shutdown at shutdown_timeout_ms (10 s by default, 3 s drain).
  assert.ok(stop > 10, `${name}: TimeoutStopSec ${stop} must exceed the 10 s shutdown bound`);
  const exec = unitValue(unit, "Service", "ExecStart") ?? "";
  assert.doesNotMatch(exec, /(^|\s)(-A|--allow-all)(\s|$)/, `${name}: never -A`);
  assert.equal(unitValue(unit, "Install", "WantedBy"), "multi-user.target", `${name}: WantedBy`);
}

/**
 * Builds a throwaway root for `systemd-analyze --root`: the distribution's stock units (targets the
 * unit depends on), stand-ins for the binaries, and the given unit files (plus drop-ins).
 *
 * @param units Map of path below `/etc/systemd/system` to file content.
 */
export async function analyzeRoot(units: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "ztna-systemd-" });
  for (const dir of ["usr/local/bin", "bin", "lib/systemd", "etc/systemd/system"]) {
    await Deno.mkdir(join(root, dir), { recursive: true });
  }
  const copy = await run("cp", ["-r", "/lib/systemd/system", join(root, "lib/systemd/")]);
  assert.equal(copy.code, 0, copy.stderr);
  for (const component of COMPONENTS) {
    await Deno.copyFile("/bin/true", join(root, "usr/local/bin", `ztna-${component}`));
  }
  await Deno.copyFile("/bin/kill", join(root, "bin/kill"));
  for (const [path, text] of Object.entries(units)) {
    const full = join(root, "etc/systemd/system", path);
    await Deno.mkdir(join(full, ".."), { recursive: true });
    await Deno.writeTextFile(full, text);
  }
  return root;
}

/** Runs `systemd-analyze verify` and fails on a non-zero exit or any diagnostic line. */
export async function assertVerifies(root: string, unitName: string): Promise<void> {
  const result = await run("systemd-analyze", ["verify", `--root=${root}`, unitName]);
  assert.equal(result.code, 0, `${unitName}: systemd-analyze verify failed:\n${result.stderr}`);
  assert.equal(
    result.stderr.trim(),
    "",
    `${unitName}: systemd-analyze verify warned:\n${result.stderr}`,
  );
}

/** Highest accepted `systemd-analyze security` exposure (its 0..100 scale; "2.5" printed). */
export const MAX_EXPOSURE = 25;
