/**
 * Checks `deploy/prometheus/` and `deploy/grafana/`: promtool accepts the scrape config and the
 * alert rules, the rules' unit tests pass, every dashboard query is valid PromQL, and every metric
 * the rules and the dashboard reference is one the components export (the common process metrics
 * are checked against a live scrape of the shared metrics registry here; the relay's own against
 * the running relay in `deploy_rootfs_test.ts`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parse } from "yaml";
import { createMetricsRegistry } from "../../shared/ops/metrics.ts";
import { EXPORTED_METRICS, referencedMetrics, unknownMetrics } from "./metrics.ts";
import { requireTools } from "../../tools/host_tools.ts";
import { listFiles, repoPath, run } from "./util.ts";

interface Panel {
  id: number;
  type: string;
  title: string;
  targets?: { expr: string; refId: string; datasource?: { uid: string } }[];
  datasource?: { uid: string };
  gridPos: { h: number; w: number; x: number; y: number };
}

/** Every PromQL expression of every Grafana dashboard in deploy/grafana, by "file: panel". */
export async function dashboardQueries(): Promise<Map<string, string>> {
  const queries = new Map<string, string>();
  for (const file of listFiles(repoPath("deploy/grafana"), [".json"])) {
    const dashboard = JSON.parse(await Deno.readTextFile(file));
    for (const panel of dashboard.panels as Panel[]) {
      for (const target of panel.targets ?? []) {
        queries.set(`${file}: ${panel.title} ${target.refId}`, target.expr);
      }
    }
    for (const variable of dashboard.templating.list) {
      if (variable.type === "query") queries.set(`${file}: $${variable.name}`, variable.definition);
    }
  }
  return queries;
}

/** Every alert/recording expression in deploy/prometheus/alerts.yml, by alert name. */
export async function ruleExpressions(): Promise<Map<string, string>> {
  const rules = parse(await Deno.readTextFile(repoPath("deploy/prometheus/alerts.yml")));
  const exprs = new Map<string, string>();
  for (const group of rules.groups) {
    for (const rule of group.rules) exprs.set(rule.alert ?? rule.record, rule.expr);
  }
  return exprs;
}

/** Metrics referenced by any of the expressions, with the expressions naming each. */
function referenced(exprs: Map<string, string>): Map<string, string[]> {
  const where = new Map<string, string[]>();
  for (const [name, expr] of exprs) {
    const query = expr.replace(/^label_values\((\w+),\s*\w+\)$/, "$1");
    for (const metric of referencedMetrics(query)) {
      where.set(metric, [...(where.get(metric) ?? []), name]);
    }
  }
  return where;
}

Deno.test("deploy/grafana: panels are well-formed and use the datasource variable", async () => {
  const files = listFiles(repoPath("deploy/grafana"), [".json"]);
  assert.ok(files.length >= 1, "at least one dashboard");
  for (const file of files) {
    const dashboard = JSON.parse(await Deno.readTextFile(file));
    assert.equal(typeof dashboard.uid, "string");
    const ids = new Set<number>();
    for (const panel of dashboard.panels as Panel[]) {
      assert.ok(!ids.has(panel.id), `${file}: duplicate panel id ${panel.id}`);
      ids.add(panel.id);
      const { x, w } = panel.gridPos;
      assert.ok(x >= 0 && x + w <= 24, `${file}: panel ${panel.title} fits the 24-column grid`);
      if (panel.type === "row") continue;
      assert.ok((panel.targets ?? []).length > 0, `${file}: panel ${panel.title} has a query`);
      assert.equal(panel.datasource?.uid, "${datasource}", `${file}: ${panel.title} datasource`);
    }
  }
});

Deno.test("deploy: dashboards and alert rules reference only exported metrics", async () => {
  const used = referenced(new Map([...await dashboardQueries(), ...await ruleExpressions()]));
  const unknown = unknownMetrics(used.keys());
  assert.deepEqual(
    unknown.map((name) => `${name} (in ${used.get(name)!.join(", ")})`),
    [],
    "metrics no component exports",
  );
  // Every component's metrics are shown somewhere on the dashboard.
  const onDashboard = referenced(await dashboardQueries());
  for (const component of ["relay", "connector", "agent"]) {
    assert.ok(
      EXPORTED_METRICS[component].some((name) => onDashboard.has(name)),
      `the dashboard shows ${component} metrics`,
    );
  }
  // The check itself catches a misspelt metric.
  assert.deepEqual(
    unknownMetrics(referencedMetrics('sum by (reason) (rate(ztna_relay_drop_total{x="y"}[5m]))')),
    ["ztna_relay_drop_total"],
  );
  assert.deepEqual(
    referencedMetrics(
      'histogram_quantile(0.9, sum by (le) (rate(ztna_relay_flow_setup_seconds_bucket{instance=~"$instance"}[$__rate_interval])))',
    ),
    ["ztna_relay_flow_setup_seconds"],
  );
});

Deno.test("deploy: process metrics used by dashboards and rules appear in a live scrape", async () => {
  const registry = createMetricsRegistry("ztna_relay_");
  try {
    const text = await registry.metrics();
    const scraped = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
    const used = referenced(new Map([...await dashboardQueries(), ...await ruleExpressions()]));
    for (const name of EXPORTED_METRICS.common) {
      if (used.has(name)) assert.ok(scraped.has(name), `${name} is in the live scrape`);
    }
  } finally {
    registry.clear();
  }
});

Deno.test({
  name: "deploy/prometheus: promtool checks the config, the rules and the rules' unit tests",
  fn: async () => {
    requireTools(["promtool"]);
    const dir = repoPath("deploy/prometheus");
    const rules = await run("promtool", ["check", "rules", "alerts.yml"], { cwd: dir });
    assert.equal(rules.code, 0, rules.stdout + rules.stderr);
    const config = await run("promtool", ["check", "config", "prometheus.yml"], { cwd: dir });
    assert.equal(config.code, 0, config.stdout + config.stderr);
    const tests = await run("promtool", ["test", "rules", "alerts_test.yml"], { cwd: dir });
    assert.equal(tests.code, 0, tests.stdout + tests.stderr);

    // The unit tests fail when an alert's threshold is broken.
    const tmp = await Deno.makeTempDir({ prefix: "ztna-prom-" });
    try {
      const alerts = await Deno.readTextFile(join(dir, "alerts.yml"));
      const broken = alerts.replace(
        "rate(ztna_connector_source_validation_rejects_total[5m]) > 0",
        "rate(ztna_connector_source_validation_rejects_total[5m]) > 1000",
      );
      assert.notEqual(broken, alerts);
      await Deno.writeTextFile(join(tmp, "alerts.yml"), broken);
      await Deno.copyFile(join(dir, "alerts_test.yml"), join(tmp, "alerts_test.yml"));
      const failing = await run("promtool", ["test", "rules", "alerts_test.yml"], { cwd: tmp });
      assert.notEqual(failing.code, 0, "promtool test rules catches a broken alert");
      assert.match(failing.stdout + failing.stderr, /ZtnaSourceValidationRejects/);

      // Every dashboard query parses as PromQL: check them as recording rules.
      const records = [...(await dashboardQueries()).entries()]
        .filter(([, expr]) => !expr.startsWith("label_values("))
        .map(([name, expr], i) => ({
          record: `dashboard:query_${i}`,
          expr: expr.replaceAll("$__rate_interval", "5m").replaceAll("$instance", ".*"),
          labels: { panel: name.replace(/^.*: /, "") },
        }));
      await Deno.writeTextFile(
        join(tmp, "dashboard.rules.json"),
        JSON.stringify({ groups: [{ name: "dashboard", rules: records }] }),
      );
      const promql = await run("promtool", ["check", "rules", "dashboard.rules.json"], {
        cwd: tmp,
      });
      assert.equal(promql.code, 0, promql.stdout + promql.stderr);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
