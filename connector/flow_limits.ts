/**
 * Flow budgets of the connector: every live flow holds one socket, so one agent identity
 * (over any number of relay connections) must not be able to take every file descriptor.
 * UDP and TCP flows of all relays draw from the same budgets.
 *
 * @module
 */

/** Which budget refused an open; also the `limit` label of `ztna_connector_limit_hits_total`. */
export type FlowLimit = "flows_per_agent" | "max_flows" | "open_files";

/** The agent key of opens from a relay that does not name the agent (an older relay). */
export const UNKNOWN_AGENT = "unknown";

/** Live-flow accounting per agent identity and in total. */
export interface FlowLimits {
  /**
   * Takes one flow from the budgets of `agent` (undefined: {@linkcode UNKNOWN_AGENT}).
   * Returns the budget that is exhausted, or null when the flow was counted.
   */
  acquire(agent: string | undefined): FlowLimit | null;
  /** Gives back a flow taken by {@linkcode FlowLimits.acquire} for the same `agent`. */
  release(agent: string | undefined): void;
  /** Live flows counted in total. */
  readonly total: number;
}

/**
 * Creates the budgets.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { createFlowLimits } from "./flow_limits.ts";
 *
 * const limits = createFlowLimits({ flowsPerAgent: 1, maxFlows: 2 });
 * assert.equal(limits.acquire("alice"), null);
 * assert.equal(limits.acquire("alice"), "flows_per_agent");
 * assert.equal(limits.acquire(undefined), null);
 * assert.equal(limits.acquire("bob"), "max_flows");
 * limits.release("alice");
 * assert.equal(limits.acquire("bob"), null);
 * ```
 *
 * @param options `flowsPerAgent` per identity, `maxFlows` in total.
 * @returns The budgets, all empty.
 */
export function createFlowLimits(
  options: { flowsPerAgent: number; maxFlows: number },
): FlowLimits {
  const byAgent = new Map<string, number>();
  let total = 0;
  return {
    acquire(agent) {
      const key = agent ?? UNKNOWN_AGENT;
      const held = byAgent.get(key) ?? 0;
      if (held >= options.flowsPerAgent) return "flows_per_agent";
      if (total >= options.maxFlows) return "max_flows";
      byAgent.set(key, held + 1);
      total++;
      return null;
    },
    release(agent) {
      const key = agent ?? UNKNOWN_AGENT;
      const held = byAgent.get(key) ?? 0;
      if (held === 0) return;
      // Identities without flows are forgotten, so the map is bounded by live flows.
      if (held === 1) byAgent.delete(key);
      else byAgent.set(key, held - 1);
      total--;
    },
    get total() {
      return total;
    },
  };
}

/**
 * True when `error` is the kernel refusing a new descriptor (EMFILE: this process is at its
 * open-file limit; ENFILE: the whole system is).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { isOutOfFiles } from "./flow_limits.ts";
 *
 * assert.ok(isOutOfFiles(Object.assign(new Error("Too many open files"), { code: "EMFILE" })));
 * assert.ok(!isOutOfFiles(new Error("Connection refused")));
 * ```
 *
 * @param error What a socket open threw.
 * @returns Whether it is a descriptor shortage.
 */
export function isOutOfFiles(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "EMFILE" || code === "ENFILE" ||
    (error instanceof Error && /too many open files/i.test(error.message));
}
