/**
 * The relay's authorization policy: which identities may register (serve) and open
 * (use) each service. Default deny: a service or identity not listed is refused.
 *
 * @module
 */
import type { RelayConfig } from "../shared/config/mod.ts";

/** Decisions the relay asks the policy for. */
export interface Policy {
  /** True when `identity` may register `service` as a connector. */
  mayRegister(identity: string, service: string): boolean;
  /** True when `identity` may open flows to `service` as an agent. */
  mayOpen(identity: string, service: string): boolean;
  /** Services whose policy lists `identity` as an agent. */
  servicesFor(identity: string): string[];
  /**
   * The rule that decides `role`'s access to `service`, for audit records: the policy list
   * (`services.<name>.agents` or `.connectors`), or `default_deny` for a service the policy
   * does not name.
   */
  ruleFor(role: "connector" | "agent", service: string): string;
}

/**
 * Builds the policy from the relay's `services` config.
 *
 * @example
 * ```ts
 * import { createPolicy } from "./policy.ts";
 * const policy = createPolicy({ echo: { connectors: ["c1"], agents: ["a1"] } });
 * if (!policy.mayOpen("a1", "echo") || policy.mayOpen("a2", "echo")) throw new Error();
 * ```
 */
export function createPolicy(services: RelayConfig["services"]): Policy {
  const connectors = new Map<string, Set<string>>();
  const agents = new Map<string, Set<string>>();
  for (const [name, rule] of Object.entries(services)) {
    connectors.set(name, new Set(rule.connectors));
    agents.set(name, new Set(rule.agents));
  }
  return {
    mayRegister: (identity, service) => connectors.get(service)?.has(identity) ?? false,
    mayOpen: (identity, service) => agents.get(service)?.has(identity) ?? false,
    servicesFor: (identity) =>
      [...agents].filter(([, allowed]) => allowed.has(identity)).map(([name]) => name),
    ruleFor: (role, service) =>
      agents.has(service) ? `services.${service}.${role}s` : "default_deny",
  };
}

/** What a policy reload changed for one service's lists. */
export interface ServiceChange {
  agents_added?: string[];
  agents_removed?: string[];
  connectors_added?: string[];
  connectors_removed?: string[];
}

/** What a policy reload changed, as the `policy_reload` audit record states it. */
export interface PolicyDiff {
  services_added: string[];
  services_removed: string[];
  services_changed: Record<string, ServiceChange>;
}

/**
 * What changed from `previous` to `next`: services added and removed, and for services in
 * both, the identities added to or removed from each list.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { policyDiff } from "./policy.ts";
 *
 * const diff = policyDiff(
 *   { echo: { connectors: ["c1"], agents: ["a1", "a2"] }, old: { connectors: [], agents: [] } },
 *   { echo: { connectors: ["c1"], agents: ["a1"] }, dns: { connectors: ["c1"], agents: [] } },
 * );
 * assert.deepEqual(diff, {
 *   services_added: ["dns"],
 *   services_removed: ["old"],
 *   services_changed: { echo: { agents_removed: ["a2"] } },
 * });
 * ```
 *
 * @param previous The policy before the reload.
 * @param next The policy after it.
 * @returns The changes.
 */
export function policyDiff(
  previous: RelayConfig["services"],
  next: RelayConfig["services"],
): PolicyDiff {
  const minus = (a: string[], b: string[]) => a.filter((x) => !b.includes(x));
  const changed: Record<string, ServiceChange> = {};
  for (const [name, rule] of Object.entries(next)) {
    const before = previous[name];
    if (before === undefined) continue;
    const change: ServiceChange = {};
    for (const list of ["agents", "connectors"] as const) {
      const added = minus(rule[list], before[list]);
      const removed = minus(before[list], rule[list]);
      if (added.length > 0) change[`${list}_added`] = added;
      if (removed.length > 0) change[`${list}_removed`] = removed;
    }
    if (Object.keys(change).length > 0) changed[name] = change;
  }
  return {
    services_added: Object.keys(next).filter((name) => previous[name] === undefined),
    services_removed: Object.keys(previous).filter((name) => next[name] === undefined),
    services_changed: changed,
  };
}
