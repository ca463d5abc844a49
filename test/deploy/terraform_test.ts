/**
 * Checks `deploy/terraform/` without a cloud account or the Terraform binary: every `.tf` file
 * parses as HCL (npm `hcl2-parser`, HashiCorp's HCL parser compiled to JavaScript); no security
 * group rule opens the metrics port to the internet; UDP QUIC is open; every variable is
 * described, typed and (for the inputs that matter) validated; the module's outputs exist; the
 * example root calls the module; cloud-init pins the release by checksum and installs the same
 * hardened systemd unit as deploy/systemd. When `terraform` is installed, `terraform fmt -check`
 * also runs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import hcl from "hcl2-parser";
import { requireTools } from "../../tools/host_tools.ts";
import { listFiles, repoPath, run } from "./util.ts";

// deno-lint-ignore no-explicit-any
type Hcl = any;

const MODULE = repoPath("deploy/terraform/modules/ztna-relay");
const EXAMPLE = repoPath("deploy/terraform/examples/single-relay");

/** Parses one HCL file into hcl2-parser's JSON shape; throws with the parser's message. */
export function parseHcl(text: string, name: string): Hcl {
  const [value, error] = hcl.parseToObject(text);
  if (error) throw new Error(`${name}: ${error.Msg ?? JSON.stringify(error)}`);
  return value;
}

/** All blocks of one type (e.g. "resource") across a folder's .tf files, merged. */
async function parseFolder(dir: string): Promise<Hcl[]> {
  const files = listFiles(dir, [".tf"]);
  assert.ok(files.length > 0, `${dir} has .tf files`);
  return await Promise.all(files.map(async (f) => parseHcl(await Deno.readTextFile(f), f)));
}

function blocks(docs: Hcl[], type: string): Record<string, Hcl> {
  return Object.assign({}, ...docs.map((d) => d[type] ?? {}));
}

const OPEN = /^(0\.0\.0\.0\/0|::\/0)$/;

/** The literal or variable-derived CIDRs of an ingress rule, with the variable defaults. */
function ruleCidrs(rule: Hcl, variables: Record<string, Hcl>): string[] {
  const cidrs: string[] = [];
  for (const field of [rule.cidr_ipv4, rule.cidr_ipv6, ...(rule.cidr_blocks ?? [])]) {
    if (field === undefined) continue;
    if (field === "${each.value}" && typeof rule.for_each === "string") {
      const variable = rule.for_each.match(/var\.(\w+)/)?.[1];
      assert.ok(variable, `for_each over a variable: ${rule.for_each}`);
      cidrs.push(...(variables[variable][0].default ?? []), `var.${variable}`);
    } else {
      cidrs.push(String(field));
    }
  }
  return cidrs;
}

/** Resolves a port expression (literal or `var.x`) to a number via the variable's default. */
function port(value: Hcl, variables: Record<string, Hcl>): number {
  if (typeof value === "number") return value;
  const variable = String(value).match(/^\$\{var\.(\w+)\}$/)?.[1];
  assert.ok(variable, `port is a literal or a variable: ${value}`);
  return variables[variable][0].default;
}

/** Asserts the module's network exposure; throws naming the offending rule. */
export function assertSecurityGroups(docs: Hcl[]): void {
  const resources = blocks(docs, "resource");
  const variables = blocks(docs, "variable");
  const metricsPort = variables.metrics_port[0].default;
  const rules: [string, Hcl][] = [];
  for (const [name, list] of Object.entries(resources.aws_vpc_security_group_ingress_rule ?? {})) {
    rules.push([`aws_vpc_security_group_ingress_rule.${name}`, (list as Hcl[])[0]]);
  }
  for (const [name, list] of Object.entries(resources.aws_security_group ?? {})) {
    for (const ingress of (list as Hcl[])[0].ingress ?? []) {
      rules.push([`aws_security_group.${name} ingress`, ingress]);
    }
  }
  let quicOpen = false;
  for (const [name, rule] of rules) {
    const from = port(rule.from_port, variables);
    const to = port(rule.to_port, variables);
    const cidrs = ruleCidrs(rule, variables);
    const protocol = String(rule.ip_protocol ?? rule.protocol);
    const coversMetrics = (protocol === "tcp" || protocol === "-1") && from <= metricsPort &&
      metricsPort <= to;
    if (coversMetrics || protocol === "-1") {
      assert.ok(!cidrs.some((c) => OPEN.test(c)), `${name} opens the metrics port to the internet`);
    }
    if (protocol === "udp" && from <= 4433 && 4433 <= to) quicOpen = true;
  }
  assert.ok(quicOpen, "a rule opens UDP 4433");
  assert.ok(rules.length >= 2, "ingress rules found");
  // The metrics CIDRs come from a variable whose validation refuses 0.0.0.0/0.
  const validation = variables.metrics_cidrs[0].validation?.[0];
  assert.ok(validation, "metrics_cidrs is validated");
  assert.equal(variables.metrics_cidrs[0].default, undefined, "metrics_cidrs has no default");
  assert.match(validation.condition, />= 8/, "metrics_cidrs refuses /0 (prefix at least /8)");
}

Deno.test("deploy/terraform: every .tf file parses as HCL", async () => {
  const files = listFiles(repoPath("deploy/terraform"), [".tf"]);
  assert.ok(files.length >= 6);
  for (const file of files) parseHcl(await Deno.readTextFile(file), file);
  assert.throws(() => parseHcl('resource "a" "b" {\n  x = \n}\n', "broken.tf"), /broken\.tf/);
});

Deno.test("deploy/terraform: security groups open QUIC and never the metrics port to the world", async () => {
  const docs = await parseFolder(MODULE);
  assertSecurityGroups(docs);

  // The same check fails on a module that opens the metrics port to everyone.
  const main = await Deno.readTextFile(join(MODULE, "main.tf"));
  const opened = main.replace(
    "for_each          = toset(var.metrics_cidrs)",
    'for_each          = toset(["0.0.0.0/0"])',
  );
  assert.notEqual(opened, main);
  const others = docs.filter((_, i) => !listFiles(MODULE, [".tf"])[i].endsWith("main.tf"));
  const literal = parseHcl(opened, "main.tf");
  assert.throws(() => assertSecurityGroups([...others, literal]), /for_each over a variable/);
  const inline = main.replace(
    'resource "aws_security_group" "relay" {',
    'resource "aws_security_group" "relay" {\n  ingress {\n    from_port = 0\n    to_port = 65535\n    protocol = "tcp"\n    cidr_blocks = ["0.0.0.0/0"]\n  }',
  );
  assert.throws(
    () => assertSecurityGroups([...others, parseHcl(inline, "main.tf")]),
    /opens the metrics port/,
  );
});

Deno.test("deploy/terraform: variables are typed, described and validated; outputs exist", async () => {
  for (const dir of [MODULE, EXAMPLE]) {
    const variables = blocks(await parseFolder(dir), "variable");
    for (const [name, [variable]] of Object.entries(variables) as [string, Hcl[]][]) {
      assert.ok(variable.description, `${dir}: variable ${name} has a description`);
      assert.ok(variable.type, `${dir}: variable ${name} has a type`);
    }
  }
  const module = await parseFolder(MODULE);
  const variables = blocks(module, "variable");
  for (
    const name of [
      "name",
      "vpc_cidr",
      "instance_type",
      "quic_port",
      "quic_ingress_cidrs",
      "metrics_port",
      "metrics_cidrs",
      "release_repository",
      "release_version",
      "release_sha256",
      "tls_ssm_parameters",
      "log_level",
    ]
  ) {
    const validation = variables[name]?.[0].validation?.[0];
    assert.ok(validation?.condition && validation.error_message, `variable ${name} is validated`);
  }
  const outputs = blocks(module, "output");
  for (const name of ["public_ip", "relay_address", "metrics_url", "instance_id"]) {
    assert.ok(outputs[name]?.[0].value, `output ${name}`);
  }
  const resources = blocks(module, "resource");
  for (const type of ["aws_vpc", "aws_subnet", "aws_security_group", "aws_instance", "aws_eip"]) {
    assert.ok(resources[type], `the module creates ${type}`);
  }
  const instance = Object.values(resources.aws_instance)[0] as Hcl[];
  assert.equal(instance[0].metadata_options[0].http_tokens, "required", "IMDSv2 only");
  assert.equal(instance[0].root_block_device[0].encrypted, true, "encrypted root volume");

  const example = await parseFolder(EXAMPLE);
  const call = blocks(example, "module").relay?.[0];
  assert.equal(call?.source, "../../modules/ztna-relay", "the example root uses the module");
  for (const [name, [variable]] of Object.entries(variables) as [string, Hcl[]][]) {
    if (variable.default === undefined) assert.ok(name in call, `example passes required ${name}`);
  }
});

Deno.test("deploy/terraform: cloud-init pins the release by checksum and installs the hardened unit", async () => {
  const template = await Deno.readTextFile(join(MODULE, "cloud-init.yaml.tftpl"));
  assert.match(template, /^#cloud-config\n/);
  assert.match(template, /sha256sum -c -/, "the download is verified");
  const verify = template.indexOf("sha256sum -c");
  const install = template.indexOf("/usr/local/bin/ztna-relay]");
  assert.ok(verify >= 0 && verify < install, "verified before it is installed");
  assert.match(template, /systemctl, enable, --now, ztna-relay\.service/);
  const main = await Deno.readTextFile(join(MODULE, "main.tf"));
  assert.match(
    main,
    /file\("\$\{path\.module\}\/\.\.\/\.\.\/\.\.\/systemd\/ztna-relay\.service"\)/,
  );
  await Deno.stat(join(MODULE, "../../../systemd/ztna-relay.service"));
  assert.match(
    main,
    /metrics\s+= "0\.0\.0\.0:\$\{var\.metrics_port\}"/,
    "metrics reachable by probes",
  );
});

Deno.test({
  name: "deploy/terraform: terraform fmt -check",
  fn: async () => {
    requireTools(["terraform"]);
    const result = await run("terraform", [
      "fmt",
      "-recursive",
      "-check",
      "-diff",
      "deploy/terraform",
    ], {
      env: { TF_CLI_CONFIG_FILE: "/dev/null", CHECKPOINT_DISABLE: "1" },
    });
    assert.equal(result.code, 0, result.stdout + result.stderr);
  },
});
