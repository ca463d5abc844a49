/**
 * Relay entrypoint: `deno task relay --config relay.json`.
 *
 * @module
 */
import { runComponent } from "../shared/component_main.ts";
import { formatHostPort } from "../shared/config/address.ts";
import { relayConfigSchema } from "../shared/config/mod.ts";
import { readTlsFiles } from "../shared/tls_files.ts";
import { createRelayMetrics } from "./metrics.ts";
import { startRelay } from "./relay.ts";
import { relayStatusPage } from "./status.ts";

runComponent({
  component: "relay",
  schema: relayConfigSchema,
  unscopedNet: true,
  start(config, { logger, tls, ops, audit, tracer }) {
    const relay = startRelay(config, {
      logger,
      tls,
      audit,
      tracer,
      draining: () => ops.draining,
      onHandlerError: ops.onHandlerError,
      metrics: (sources) => createRelayMetrics(ops.registry, sources),
    });
    ops.ready();
    return { ...relay, isReady: () => true };
  },
  reload(next, relay, logger, initial) {
    // setTls builds the new TLS context before swapping it in, so bad PEM material throws
    // here with nothing changed; the policy swap after it cannot fail.
    relay.setTls(readTlsFiles(next.tls));
    relay.setPolicy(next.services);
    relay.setTokens(next.tokens);
    const restartOnly = (["listen", "metrics", "limits", "auth"] as const).filter((key) =>
      JSON.stringify(next[key]) !== JSON.stringify(initial[key])
    );
    if (restartOnly.length > 0) {
      logger.warn("reload: these settings take effect only after a restart", {
        fields: restartOnly,
      });
    }
    logger.info("reloaded", { services: Object.keys(next.services).length });
  },
  status(relay) {
    const json = relay.status();
    return { json, page: relayStatusPage(json) };
  },
  readyFields: (config, relay) => ({
    quic: formatHostPort(relay.addr),
    services: Object.keys(config.services),
  }),
});
