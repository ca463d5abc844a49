import assert from "node:assert/strict";
import { libcPath } from "./quic/libc.ts";
import { createLogger } from "./log.ts";
import { checkSandbox, excessPermissions, netPermitted } from "./sandbox.ts";

Deno.test("excessPermissions: unscoped net is excess only where it is not needed", () => {
  const netOnly = (d: Deno.PermissionDescriptor) => d.name === "net" && !("host" in d && d.host);
  assert.deepEqual(excessPermissions({ unscopedNet: false, granted: netOnly }), ["net"]);
  assert.deepEqual(excessPermissions({ unscopedNet: true, granted: netOnly }), []);
});

Deno.test("excessPermissions: a scoped write grant is found by probing", () => {
  const granted = (d: Deno.PermissionDescriptor) =>
    d.name === "write" && "path" in d && d.path === "/etc/ztna";
  assert.deepEqual(
    excessPermissions({ unscopedNet: false, writeProbes: ["/etc/ztna/relay.pem"], granted }),
    ["write"],
  );
});

Deno.test("excessPermissions: a libc grant is excess only when the portable socket is configured", () => {
  const libc = libcPath();
  if (libc === null) return; // No batched socket on this host, so no libc grant to judge.
  const libcOnly = (d: Deno.PermissionDescriptor) =>
    d.name === "ffi" && (d as Deno.FfiPermissionDescriptor).path === libc;
  assert.deepEqual(excessPermissions({ unscopedNet: true, granted: libcOnly }), []);
  assert.deepEqual(
    excessPermissions({ unscopedNet: true, granted: libcOnly, libcNeeded: false }),
    ["ffi"],
  );
});

Deno.test("checkSandbox: warns without strict, exits 2 with it", () => {
  const lines: string[] = [];
  const codes: number[] = [];
  const logger = createLogger("agent", { write: (l) => lines.push(l) });
  const granted = (d: Deno.PermissionDescriptor) => d.name === "run";
  checkSandbox({ component: "agent", logger, strict: false, unscopedNet: false, granted });
  assert.equal(JSON.parse(lines[0]).level, "warn");
  assert.equal(codes.length, 0);
  checkSandbox({
    component: "agent",
    logger,
    strict: true,
    unscopedNet: false,
    granted,
    exit: (c) => void codes.push(c),
  });
  assert.deepEqual(codes, [2]);
});

Deno.test("netPermitted: asks Deno for the exact host:port", () => {
  // The suite runs with -A, so both are granted (IPv6 is bracketed for the query);
  // test/e2e/sandbox_test.ts shows a refusal in a real sandbox.
  assert.equal(netPermitted("127.0.0.1", 9), true);
  assert.equal(netPermitted("::1", 9), true);
});

Deno.test("excessPermissions: the audit files may be written, their folder may not", () => {
  const audit = ["/var/log/ztna/audit.jsonl", "/var/log/ztna/audit.jsonl.1"];
  const exact = (d: Deno.PermissionDescriptor) =>
    d.name === "write" && "path" in d && audit.includes(String(d.path));
  assert.deepEqual(
    excessPermissions({ unscopedNet: false, allowedWrites: audit, granted: exact }),
    [],
  );
  const folder = (d: Deno.PermissionDescriptor) =>
    d.name === "write" && "path" in d && d.path === "/var/log/ztna";
  assert.deepEqual(
    excessPermissions({ unscopedNet: false, allowedWrites: audit, granted: folder }),
    ["write"],
  );
});
