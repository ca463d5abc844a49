/**
 * Reload check for the connector's sandbox: its `--allow-net` scope was derived from the
 * backends configured at start, so a reloaded config may name a backend this process can
 * never reach. Such a reload is rejected up front instead of failing flow by flow.
 *
 * @module
 */
import { formatHostPort } from "../shared/config/address.ts";
import type { ConnectorConfig } from "../shared/config/mod.ts";
import { isIpLiteral } from "../shared/resolve_host.ts";

/**
 * Throws when a backend of `services` lies outside this process's network permissions: its
 * `host:port`, and for a name the addresses `hosts` gives it (or, without them, the bare
 * name its lookup would need).
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { assertBackendsReachable } from "./backend_scope.ts";
 *
 * const query = () => ({ state: "denied" }) as Deno.PermissionStatus;
 * const echo = [{ protocol: "udp" as const, host: "10.0.0.5", port: 7 }];
 * assert.throws(() => assertBackendsReachable({ echo }, {}, query), /restart/);
 * assertBackendsReachable({ echo }, {}, () => ({ state: "granted" }) as Deno.PermissionStatus);
 * ```
 *
 * @param services The reloaded service map.
 * @param hosts The reloaded `hosts` (addresses of backend names).
 * @param query Permission lookup; injectable for tests.
 * @throws {Error} Naming the first backend outside the sandbox.
 */
export function assertBackendsReachable(
  services: ConnectorConfig["services"],
  hosts: ConnectorConfig["hosts"] = {},
  query: (descriptor: Deno.NetPermissionDescriptor) => Deno.PermissionStatus = (d) =>
    Deno.permissions.querySync(d),
): void {
  for (const [name, urls] of Object.entries(services)) {
    for (const url of urls) {
      const host = formatHostPort(url);
      const needed = isIpLiteral(url.host) ? [host] : [
        host,
        ...hosts[url.host]?.map((ip) => formatHostPort({ host: ip, port: url.port })) ??
          [url.host],
      ];
      if (needed.some((host) => query({ name: "net", host }).state !== "granted")) {
        throw new Error(
          `service ${name}: backend ${host} is outside this connector's network sandbox ` +
            "(derived at start); restart the connector to serve it",
        );
      }
    }
  }
}
