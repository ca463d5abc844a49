/**
 * Checks the hardened systemd units in `deploy/systemd/`: the directives the deployment relies on
 * are present, `systemd-analyze verify` accepts them without a warning, and
 * `systemd-analyze security` rates their exposure as low.
 */
import assert from "node:assert/strict";
import {
  analyzeRoot,
  assertHardened,
  assertVerifies,
  COMPONENTS,
  MAX_EXPOSURE,
  parseUnit,
  unitValue,
} from "./systemd.ts";
import { requireTools } from "../../tools/host_tools.ts";
import { repoPath, run } from "./util.ts";

Deno.test("deploy/systemd: units carry the hardening and lifecycle directives", async () => {
  for (const component of COMPONENTS) {
    const name = `ztna-${component}.service`;
    const unit = parseUnit(await Deno.readTextFile(repoPath("deploy/systemd", name)));
    assertHardened(unit, name);
    assert.equal(
      unitValue(unit, "Service", "ExecStart"),
      `/usr/local/bin/ztna-${component} --config /etc/ztna/${component}.json`,
    );
  }
});

Deno.test("deploy/systemd: the parser check fails on a weakened unit", async () => {
  const text = await Deno.readTextFile(repoPath("deploy/systemd/ztna-relay.service"));
  const weakened = text.replace("ProtectSystem=strict", "ProtectSystem=full");
  assert.throws(() => assertHardened(parseUnit(weakened), "weakened"), /ProtectSystem/);
  const root = text.replace("User=ztna", "User=root");
  assert.throws(() => assertHardened(parseUnit(root), "root"), /non-root/);
});

Deno.test({
  name: "deploy/systemd: systemd-analyze verify and security accept every unit",
  fn: async () => {
    requireTools(["systemd-analyze"]);
    const units: Record<string, string> = {};
    for (const component of COMPONENTS) {
      const name = `ztna-${component}.service`;
      units[name] = await Deno.readTextFile(repoPath("deploy/systemd", name));
    }
    const root = await analyzeRoot(units);
    try {
      for (const name of Object.keys(units)) {
        await assertVerifies(root, name);
        const security = await run("systemd-analyze", [
          "security",
          "--offline=yes",
          `--root=${root}`,
          `--threshold=${MAX_EXPOSURE}`,
          name,
        ]);
        assert.equal(security.code, 0, `${name}: exposure above threshold:\n${security.stdout}`);
      }
      // The same checks reject a broken unit (misspelt key) and a weak one.
      const broken = await analyzeRoot({
        "ztna-relay.service": units["ztna-relay.service"].replace(
          "RestrictAddressFamilies=",
          "RestrictAddressFamilie=",
        ),
      });
      await assert.rejects(assertVerifies(broken, "ztna-relay.service"), /Unknown key/);
      await Deno.remove(broken, { recursive: true });
      const weak = await analyzeRoot({
        "ztna-relay.service": units["ztna-relay.service"]
          .replace(/^(User|Group|CapabilityBoundingSet|ProtectSystem|PrivateTmp)=.*$/gm, "")
          .replace(/^(SystemCallFilter|RestrictAddressFamilies|ProtectKernel\w+)=.*$/gm, ""),
      });
      const weakResult = await run("systemd-analyze", [
        "security",
        "--offline=yes",
        `--root=${weak}`,
        `--threshold=${MAX_EXPOSURE}`,
        "ztna-relay.service",
      ]);
      await Deno.remove(weak, { recursive: true });
      assert.notEqual(weakResult.code, 0, "a weakened unit must exceed the exposure threshold");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
