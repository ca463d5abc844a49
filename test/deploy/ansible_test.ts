/**
 * Checks `deploy/ansible/`: `ansible-playbook --syntax-check` and `ansible-lint` (production
 * profile) accept the playbook and role, a lint violation is caught, and the role's templates
 * render with Ansible itself into a config the component's schema accepts and a systemd drop-in
 * that `systemd-analyze verify` accepts together with the unit it extends.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { connectorConfigSchema } from "../../shared/config/mod.ts";
import { analyzeRoot, assertVerifies, parseUnit, unitValue } from "./systemd.ts";
import { requireTools } from "../../tools/host_tools.ts";
import { repoPath, run } from "./util.ts";

const DIR = repoPath("deploy/ansible");
const ENV = { ANSIBLE_NOCOLOR: "1", ANSIBLE_FORCE_COLOR: "0", ANSIBLE_LOCALHOST_WARNING: "0" };
const ANSIBLE_TOOLS = ["ansible", "ansible-playbook", "ansible-lint", "systemd-analyze"];

/** Renders one role template with `ansible -m template` on localhost; returns the text. */
async function render(template: string, vars: Record<string, unknown>): Promise<string> {
  const out = await Deno.makeTempDir({ prefix: "ztna-ansible-" });
  try {
    const dest = join(out, "rendered");
    const result = await run("ansible", [
      "localhost",
      "-c",
      "local",
      "-m",
      "ansible.builtin.template",
      "-a",
      `src=${join(DIR, "roles/ztna/templates", template)} dest=${dest}`,
      "-e",
      JSON.stringify(vars),
    ], { cwd: DIR, env: ENV });
    assert.equal(result.code, 0, result.stdout + result.stderr);
    return await Deno.readTextFile(dest);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
}

Deno.test({
  name: "deploy/ansible: syntax-check and ansible-lint pass, and lint catches a violation",
  fn: async () => {
    requireTools(ANSIBLE_TOOLS);
    const syntax = await run("ansible-playbook", ["--syntax-check", "site.yml"], {
      cwd: DIR,
      env: ENV,
    });
    assert.equal(syntax.code, 0, syntax.stdout + syntax.stderr);
    const lint = await run("ansible-lint", ["--profile", "production", "site.yml", "roles"], {
      cwd: DIR,
      env: ENV,
    });
    assert.equal(lint.code, 0, lint.stdout + lint.stderr);

    // A copy of the role with a shell-out restart instead of the systemd module fails the lint.
    const copy = await Deno.makeTempDir({ prefix: "ztna-ansible-lint-" });
    try {
      const cp = await run("cp", ["-r", "site.yml", "ansible.cfg", "roles", copy], { cwd: DIR });
      assert.equal(cp.code, 0, cp.stderr);
      const tasks = join(copy, "roles/ztna/tasks/main.yml");
      await Deno.writeTextFile(
        tasks,
        (await Deno.readTextFile(tasks)) +
          "\n- ansible.builtin.command: systemctl restart ztna-relay\n",
      );
      const broken = await run("ansible-lint", ["--profile", "production", "site.yml", "roles"], {
        cwd: copy,
        env: ENV,
      });
      assert.notEqual(broken.code, 0, "ansible-lint must reject the broken role");
    } finally {
      await Deno.remove(copy, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "deploy/ansible: rendered config and network drop-in are valid for the component and systemd",
  fn: async () => {
    requireTools(ANSIBLE_TOOLS);
    const config = {
      relays: ["203.0.113.10:4433"],
      metrics: "127.0.0.1:9091",
      tls: {
        cert: "/etc/ztna/tls/connector.pem",
        key: "/etc/ztna/tls/connector.key",
        ca: "/etc/ztna/tls/ca.pem",
        server_name: "relay.example.com",
      },
      services: { dns: "udp://10.0.0.5:53" },
    };
    const renderedConfig = await render("config.json.j2", { ztna_config: config });
    assert.deepEqual(JSON.parse(renderedConfig), config);
    connectorConfigSchema.parse(JSON.parse(renderedConfig));

    const dropIn = await render("network.conf.j2", {
      ztna_component: "connector",
      ztna_ip_allow: ["203.0.113.10", "10.0.0.5/32"],
    });
    const parsed = parseUnit(dropIn);
    assert.equal(unitValue(parsed, "Service", "IPAddressDeny"), "any");
    assert.deepEqual(
      parsed.get("Service")!.filter(([k]) => k === "IPAddressAllow").map(([, v]) => v),
      ["localhost", "203.0.113.10", "10.0.0.5/32"],
    );
    const unit = await Deno.readTextFile(repoPath("deploy/systemd/ztna-connector.service"));
    const root = await analyzeRoot({
      "ztna-connector.service": unit,
      "ztna-connector.service.d/network.conf": dropIn,
    });
    try {
      await assertVerifies(root, "ztna-connector.service");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
