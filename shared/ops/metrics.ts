/**
 * A per-component Prometheus registry with process metrics read from Deno's own APIs.
 *
 * prom-client's `collectDefaultMetrics` reads `/proc`, which Deno only allows with `-A`; our
 * processes never run with `-A`, so those figures would read 0. The same figures are computed
 * here from `Deno.memoryUsage()`, `node:process`'s `cpuUsage()` and `performance`, under the
 * standard names where the meaning is the same.
 *
 * @module
 */

import process from "node:process";
import { Counter, Gauge, Registry } from "prom-client";
import { registerUdpMetrics } from "./udp_metrics.ts";
import { VERSION } from "./version.ts";

/** Options for {@linkcode createMetricsRegistry}. */
export interface MetricsRegistryOptions {
  /**
   * How often the event-loop lag sampler ticks, in milliseconds.
   * @default {500}
   */
  lagSampleIntervalMs?: number;
}

const PREFIX = /^[a-zA-Z_:][a-zA-Z0-9_:]*_$/;

/**
 * Creates a fresh registry (never prom-client's global one) holding:
 * `process_resident_memory_bytes`, `nodejs_heap_size_used_bytes`,
 * `nodejs_heap_size_total_bytes`, `nodejs_external_memory_bytes`,
 * `process_start_time_seconds`, `process_cpu_user_seconds_total`,
 * `process_cpu_system_seconds_total`, `process_cpu_seconds_total`,
 * `nodejs_eventloop_lag_seconds` (latest sample), `nodejs_eventloop_lag_max_seconds` (largest
 * since the previous scrape) and `ztna_build_info{version,component}` = 1, where `component` is
 * the prefix without `ztna_` and the trailing `_` (so "ztna_relay_" gives "relay"), plus the
 * UDP socket layer's `<prefix>udp_*` (see `udp_metrics.ts`).
 *
 * The component registers its own metrics on the returned registry under `prefix`. The lag
 * sampler is an unref'd interval (it never keeps the process alive); `registry.clear()` stops
 * it, so call that when the registry is retired (tests must, or the timer leaks).
 *
 * @example Usage
 * ```ts
 * import { createMetricsRegistry } from "./metrics.ts";
 * import assert from "node:assert/strict";
 *
 * const registry = createMetricsRegistry("ztna_relay_");
 * const text = await registry.metrics();
 * assert.match(text, /^process_resident_memory_bytes [1-9]/m);
 * assert.match(text, /^ztna_build_info\{version="[^"]+",component="relay"\} 1$/m);
 * registry.clear();
 * ```
 *
 * @param prefix The component's metric-name prefix, ending in "_" (e.g. "ztna_connector_").
 * @param options Sampler settings.
 * @returns The registry; serve it with the ops listener.
 */
export function createMetricsRegistry(
  prefix: "ztna_relay_" | "ztna_connector_" | "ztna_agent_" | (string & Record<never, never>),
  options: MetricsRegistryOptions = {},
): Registry {
  const { lagSampleIntervalMs = 500 } = options;
  if (!PREFIX.test(prefix)) {
    throw new TypeError(
      `Cannot create metrics registry as 'prefix' must be a metric name ending in "_": current value is ${
        JSON.stringify(prefix)
      }`,
    );
  }
  if (!Number.isSafeInteger(lagSampleIntervalMs) || lagSampleIntervalMs < 1) {
    throw new RangeError(
      `Cannot create metrics registry as 'lagSampleIntervalMs' must be a positive integer: current value is ${lagSampleIntervalMs}`,
    );
  }
  const registry = new Registry();
  const registers = [registry];

  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers,
    collect() {
      this.set(Deno.memoryUsage().rss);
    },
  });
  new Gauge({
    name: "nodejs_heap_size_used_bytes",
    help: "Process heap size used from the V8 heap in bytes.",
    registers,
    collect() {
      this.set(Deno.memoryUsage().heapUsed);
    },
  });
  new Gauge({
    name: "nodejs_heap_size_total_bytes",
    help: "Process heap size from the V8 heap in bytes.",
    registers,
    collect() {
      this.set(Deno.memoryUsage().heapTotal);
    },
  });
  new Gauge({
    name: "nodejs_external_memory_bytes",
    help: "Memory of C++ objects bound to JavaScript objects managed by V8, in bytes.",
    registers,
    collect() {
      this.set(Deno.memoryUsage().external);
    },
  });
  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since the Unix epoch in seconds.",
    registers,
  }).set(Math.round(performance.timeOrigin) / 1000);

  registerCpuCounters(registers);
  registerUdpMetrics(registry, prefix);
  const stopSampler = registerEventLoopLag(registers, lagSampleIntervalMs);

  new Gauge({
    name: "ztna_build_info",
    help: "Build information of the running component; the value is always 1.",
    labelNames: ["version", "component"],
    registers,
  }).set({ version: VERSION, component: prefix.replace(/^ztna_/, "").replace(/_$/, "") }, 1);

  // Retiring the registry must also retire its timer; clear() is the natural end of its life.
  const clear = registry.clear.bind(registry);
  registry.clear = () => {
    stopSampler();
    clear();
  };
  return registry;
}

// process.cpuUsage() needs no permission under Deno (verified on 2.9.6), unlike /proc/self/stat.
function registerCpuCounters(registers: Registry[]): void {
  let seen = { user: 0, system: 0 };
  const user = new Counter({
    name: "process_cpu_user_seconds_total",
    help: "Total user CPU time spent in seconds.",
    registers,
  });
  const system = new Counter({
    name: "process_cpu_system_seconds_total",
    help: "Total system CPU time spent in seconds.",
    registers,
  });
  new Counter({
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds.",
    registers,
    collect() {
      // Counters only move up: add what was used since the previous scrape.
      const usage = process.cpuUsage();
      const userDelta = Math.max(0, usage.user - seen.user) / 1e6;
      const systemDelta = Math.max(0, usage.system - seen.system) / 1e6;
      seen = usage;
      user.inc(userDelta);
      system.inc(systemDelta);
      this.inc(userDelta + systemDelta);
    },
  });
}

// Lag is the drift of a fixed-interval timer: how late each tick ran beyond its interval.
function registerEventLoopLag(registers: Registry[], intervalMs: number): () => void {
  let latest = 0;
  let max = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    latest = Math.max(0, now - last - intervalMs) / 1000;
    max = Math.max(max, latest);
    last = now;
  }, intervalMs);
  Deno.unrefTimer(timer);
  new Gauge({
    name: "nodejs_eventloop_lag_seconds",
    help: "Lag of event loop in seconds (latest sample of a timer's drift).",
    registers,
    collect() {
      this.set(latest);
    },
  });
  new Gauge({
    name: "nodejs_eventloop_lag_max_seconds",
    help: "The maximum recorded event loop lag in seconds since the previous scrape.",
    registers,
    collect() {
      this.set(max);
      max = latest;
    },
  });
  return () => clearInterval(timer);
}
