import assert from "node:assert/strict";
import { Counter } from "prom-client";
import { createMetricsRegistry } from "./metrics.ts";
import { VERSION } from "./version.ts";

function sample(text: string, name: string): number {
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
  assert(match, `${name} missing from:\n${text}`);
  return Number(match[1]);
}

Deno.test("createMetricsRegistry() exports process figures from Deno's own APIs", async () => {
  const registry = createMetricsRegistry("ztna_relay_");
  try {
    // Burn a little CPU so the counters have something to show.
    for (let i = 0, x = 0; i < 2e6; i++) x += Math.sqrt(i);
    const text = await registry.metrics();
    assert(sample(text, "process_resident_memory_bytes") > 1e6);
    assert(sample(text, "nodejs_heap_size_used_bytes") > 0);
    assert(
      sample(text, "nodejs_heap_size_total_bytes") >= sample(text, "nodejs_heap_size_used_bytes"),
    );
    assert(sample(text, "nodejs_external_memory_bytes") >= 0);
    const start = sample(text, "process_start_time_seconds");
    assert(start > Date.now() / 1000 - 3600 && start <= Date.now() / 1000);
    const cpu = sample(text, "process_cpu_seconds_total");
    assert(cpu > 0);
    assert(
      Math.abs(
        cpu - sample(text, "process_cpu_user_seconds_total") -
          sample(text, "process_cpu_system_seconds_total"),
      ) < 1e-6,
    );
    assert(sample(text, "nodejs_eventloop_lag_seconds") >= 0);
    assert.match(text, /^# TYPE process_cpu_seconds_total counter$/m);
    assert.match(
      text,
      new RegExp(`^ztna_build_info\\{version="${VERSION}",component="relay"\\} 1$`, "m"),
    );

    // Counters never go down between scrapes.
    assert(sample(await registry.metrics(), "process_cpu_seconds_total") >= cpu);
  } finally {
    registry.clear();
  }
});

Deno.test("createMetricsRegistry() returns independent registries for the component's metrics", async () => {
  const relay = createMetricsRegistry("ztna_relay_");
  const agent = createMetricsRegistry("ztna_agent_");
  try {
    new Counter({
      name: "ztna_relay_flows_opened_total",
      help: "Flows opened.",
      registers: [relay],
    })
      .inc();
    assert.match(await relay.metrics(), /^ztna_relay_flows_opened_total 1$/m);
    const agentText = await agent.metrics();
    assert.doesNotMatch(agentText, /ztna_relay_flows_opened_total/);
    assert.match(agentText, /component="agent"/);
  } finally {
    relay.clear();
    agent.clear();
  }
});

Deno.test("createMetricsRegistry() measures event-loop lag with its sampler", async () => {
  const registry = createMetricsRegistry("ztna_agent_", { lagSampleIntervalMs: 20 });
  try {
    await new Promise((resolve) => setTimeout(resolve, 30));
    const blockedUntil = performance.now() + 250;
    while (performance.now() < blockedUntil) {
      // Block the event loop on purpose.
    }
    await new Promise((resolve) => setTimeout(resolve, 60));
    const text = await registry.metrics();
    assert(sample(text, "nodejs_eventloop_lag_max_seconds") >= 0.15, text);
    // The maximum restarts from the latest sample after each scrape.
    const again = await registry.metrics();
    assert(sample(again, "nodejs_eventloop_lag_max_seconds") < 0.15);
  } finally {
    // clear() also stops the sampler; the test sanitizer would report a leaked interval.
    registry.clear();
  }
});

Deno.test("createMetricsRegistry() rejects an invalid prefix or interval", () => {
  assert.throws(() => createMetricsRegistry("ztna-relay_"), TypeError);
  assert.throws(() => createMetricsRegistry("ztna_relay"), TypeError);
  assert.throws(() => createMetricsRegistry("ztna_relay_", { lagSampleIntervalMs: 0 }), RangeError);
});
