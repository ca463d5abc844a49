/**
 * CPU profiles of running components through the V8 inspector (`deno run --inspect`):
 * Deno 2.9.6 has no `--cpu-prof` flag, so the benchmark drives `Profiler.start/stop`
 * over the inspector WebSocket and summarizes self time per function.
 *
 * @module
 */
import type { ComponentProcess } from "../test/_support/harness.ts";
import { waitFor } from "../test/_support/wait.ts";

/** One line of a profile summary. */
export interface HotFunction {
  /** `name file:line`. */
  where: string;
  /** Share of all samples spent in this function itself (percent). */
  selfPercent: number;
}

/** A running capture; `stop` returns the raw profile and its summary. */
export interface ProfileCapture {
  stop(): Promise<{ profile: CpuProfile; top: HotFunction[] }>;
}

interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    hitCount?: number;
  }[];
  samples?: number[];
}

/** Starts sampling `proc` (which must run with `--inspect=host:port`). */
export async function startProfile(proc: ComponentProcess): Promise<ProfileCapture> {
  const url = await waitFor(`${proc.name} inspector URL`, () => {
    for (const line of proc.stderr) {
      const match = /(ws:\/\/\S+)/.exec(line);
      if (match) return match[1];
    }
    return undefined;
  }, 10_000);
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  let nextId = 1;
  const waiting = new Map<number, (result: unknown) => void>();
  socket.onmessage = (event) => {
    const message = JSON.parse(String(event.data));
    if (message.id !== undefined) waiting.get(message.id)?.(message.result);
  };
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => reject(new Error(`${method} timed out`)), 30_000);
      waiting.set(id, (result) => {
        clearTimeout(timer);
        resolve(result);
      });
      socket.send(JSON.stringify({ id, method, params }));
    });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 200 });
  await call("Profiler.start");
  return {
    async stop() {
      const { profile } = await call("Profiler.stop") as { profile: CpuProfile };
      socket.close();
      return { profile, top: summarize(profile) };
    },
  };
}

/** Self time per function, largest first. */
export function summarize(profile: CpuProfile, limit = 30): HotFunction[] {
  const total = profile.nodes.reduce((n, node) => n + (node.hitCount ?? 0), 0) || 1;
  const byWhere = new Map<string, number>();
  for (const node of profile.nodes) {
    const { functionName, url, lineNumber } = node.callFrame;
    const file = url.replace(/^.*\/(work\/main|node_modules)\//, "");
    const where = `${functionName || "(anonymous)"} ${file}:${lineNumber + 1}`;
    byWhere.set(where, (byWhere.get(where) ?? 0) + (node.hitCount ?? 0));
  }
  return [...byWhere].sort((a, b) => b[1] - a[1]).slice(0, limit).map(([where, hits]) => ({
    where,
    selfPercent: Number((100 * hits / total).toFixed(1)),
  }));
}
