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
  };
}
