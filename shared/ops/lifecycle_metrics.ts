/**
 * Metrics every component has: startup and shutdown durations and the last time it was
 * seen ready.
 *
 * @module
 */
import { Gauge, Histogram, type Registry } from "prom-client";

/** Lifecycle metrics of one component. */
export interface LifecycleMetrics {
  /** Process start to ready, in seconds. */
  startup: Histogram;
  /** Shutdown signal to exit, in seconds. */
  shutdown: Histogram;
  /** Unix time (s) of the latest moment the component was ready, refreshed on every scrape. */
  readyLastSuccess: Gauge;
  /** 1 while draining. */
  draining: Gauge;
}

/**
 * Registers `<prefix>startup_seconds`, `<prefix>shutdown_seconds`,
 * `<prefix>ready_last_success_timestamp_seconds` and `<prefix>draining` on `registry`.
 * `isReady` is read at scrape time so the timestamp needs no timer.
 */
export function createLifecycleMetrics(
  registry: Registry,
  prefix: string,
  isReady: () => boolean,
): LifecycleMetrics {
  const registers = [registry];
  const buckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
  let lastReady = 0;
  return {
    startup: new Histogram({
      name: `${prefix}startup_seconds`,
      help: "Time from process start to ready.",
      buckets,
      registers,
    }),
    shutdown: new Histogram({
      name: `${prefix}shutdown_seconds`,
      help: "Time from shutdown signal to the end of the drain.",
      buckets,
      registers,
    }),
    readyLastSuccess: new Gauge({
      name: `${prefix}ready_last_success_timestamp_seconds`,
      help: "Unix time of the latest successful readiness check.",
      registers,
      collect() {
        if (isReady()) lastReady = Date.now() / 1000;
        this.set(lastReady);
      },
    }),
    draining: new Gauge({
      name: `${prefix}draining`,
      help: "1 while the component drains before exit.",
      registers,
    }),
  };
}
