/**
 * Runs one UDP load series (a {@linkcode ./udp_load.ts} process stepping its offered rate)
 * against a target and works out loss per step and the highest rate at ≤ 1% loss.
 *
 * @module
 */
import { join } from "node:path";
import { spawnLogged } from "../test/_support/harness.ts";
import { PROJECT_ROOT } from "../tools/permissions.ts";
import type { LoadPlan, StepResult } from "./udp_load.ts";
import type { UdpSink } from "./udp_sink.ts";
import { libcPath } from "../shared/quic/libc.ts";

/** The generator's FFI grant: libc, for the batched socket (none where it cannot run). */
function libcGrant(): string[] {
  const path = libcPath();
  return path === null ? [] : [`--allow-ffi=${path}`];
}

/** One measured step. */
export interface SeriesStep {
  rate: number;
  sent: number;
  sentRate: number;
  delivered: number;
  /** Fraction lost (0..1). */
  loss: number;
  rtt: StepResult["rtt"];
}

/** A series outcome. */
export interface SeriesResult {
  size: number;
  echo: boolean;
  steps: SeriesStep[];
  /** Highest delivered rate (datagrams/s) among steps with ≤ 1% loss. */
  maxRate: number;
  /** Payload Mbit/s at `maxRate` (one direction). */
  maxMbps: number;
}

/** Options for {@linkcode runSeries}. */
export interface SeriesOptions {
  target: string;
  size: number;
  rates: number[];
  echo: boolean;
  /** Counts one-way deliveries (required unless `echo`). */
  sink?: UdpSink;
  stepMs?: number;
  settleMs?: number;
  warmup?: number;
  /** Stop the series after a step above this loss (the rest would only be worse). */
  stopAboveLoss?: number;
}

/** Runs the series; the load process is always stopped before this returns. */
export async function runSeries(options: SeriesOptions): Promise<SeriesResult> {
  const {
    target,
    size,
    rates,
    echo,
    sink,
    stepMs = 1500,
    settleMs = 400,
    warmup = 20,
    stopAboveLoss = 0.1,
  } = options;
  sink?.reset();
  const plan: LoadPlan = { target, size, rates, stepMs, settleMs, echo, warmup };
  const load = await spawnLogged("udp_load", [
    "run",
    "--no-prompt",
    `--config=${join(PROJECT_ROOT, "deno.json")}`,
    "--allow-net=127.0.0.1",
    ...libcGrant(),
    join(PROJECT_ROOT, "bench", "udp_load.ts"),
    JSON.stringify(plan),
  ]);
  const steps: SeriesStep[] = [];
  try {
    for (let i = 0; i < rates.length; i++) {
      const line = await load.waitForLog(
        (l) => l.msg === "step" && l.step === i,
        stepMs + settleMs + 15_000,
      ) as unknown as StepResult;
      const delivered = echo ? line.echoed : sink!.count(i);
      const loss = line.sent === 0 ? 0 : Math.max(0, 1 - delivered / line.sent);
      steps.push({
        rate: line.rate,
        sent: line.sent,
        sentRate: line.sentRate,
        delivered,
        loss,
        rtt: line.rtt,
      });
      if (loss > stopAboveLoss) break;
    }
  } finally {
    await load.stop("SIGKILL", 5000).catch(() => {});
  }
  let maxRate = 0;
  for (const step of steps) {
    // Delivered per second of sending (the generator may have taken longer than stepMs).
    const rate = step.sent === 0 ? 0 : step.sentRate * step.delivered / step.sent;
    if (step.loss <= 0.01) maxRate = Math.max(maxRate, rate);
  }
  maxRate = Math.round(maxRate);
  return { size, echo, steps, maxRate, maxMbps: Number((maxRate * size * 8 / 1e6).toFixed(1)) };
}

/** Default offered-rate ladders per payload size (datagrams/s). */
export function ratesFor(size: number): number[] {
  if (size > 4096) return [500, 1000, 2000, 3000, 4000, 5000, 6500, 8000];
  return [2000, 5000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000];
}
