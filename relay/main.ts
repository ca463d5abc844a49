/**
 * Relay entrypoint: `deno task relay --config relay.json`.
 *
 * @module
 */
import { readTlsOrExit, startComponentOps } from "../shared/component.ts";
import { formatHostPort } from "../shared/config/address.ts";
import {
  loadConfig,
  loadConfigOrExit,
  processConfigSource,
  relayConfigSchema,
} from "../shared/config/mod.ts";
import { handleSignals } from "../shared/lifecycle.ts";
import { createLogger } from "../shared/log.ts";
import { checkSandbox } from "../shared/sandbox.ts";
import { readTlsFiles } from "../shared/tls_files.ts";
import { createRelayMetrics } from "./metrics.ts";
import { startRelay } from "./relay.ts";

const config = loadConfigOrExit(relayConfigSchema, "relay");
const logger = createLogger("relay", { level: config.log_level });
// Before anything binds: a sandbox wider than the config needs is reported (or refused).
checkSandbox({
  component: "relay",
  logger,
  strict: config.strict_sandbox,
  unscopedNet: true,
  writeProbes: [config.tls.cert, config.tls.key, config.tls.ca].filter((p) => p !== undefined),
});
const tls = readTlsOrExit("relay", config.tls);

const ops = startComponentOps({
  component: "relay",
  address: config.metrics,
  logger,
  isReady: () => true,
  detail: () => relay.health(),
});
// The probes run only after this synchronous start-up, so `relay` is set by then.
const relay = startRelay(config, {
  logger,
  tls,
  metrics: (packetDrops) => createRelayMetrics(ops.registry, packetDrops),
});
ops.ready();

handleSignals({
  logger,
  shutdownTimeoutMs: config.shutdown_timeout_ms,
  async shutdown() {
    ops.startDraining();
    await relay.drain(config.drain_ms);
    await ops.close();
  },
  reload() {
    // Same sources as at start (file, env, flags); a bad file keeps the running config.
    const next = loadConfig(relayConfigSchema, processConfigSource(relayConfigSchema));
    const nextTls = readTlsFiles(next.tls);
    // setTls builds the new TLS context before swapping it in, so bad PEM material throws
    // here with nothing changed; the policy swap after it cannot fail.
    relay.setTls(nextTls);
    relay.setPolicy(next.services);
    relay.setTokens(next.tokens);
    const restartOnly = ["listen", "metrics", "limits", "auth"].filter((key) =>
      JSON.stringify(next[key as keyof typeof next]) !==
        JSON.stringify(config[key as keyof typeof config])
    );
    if (restartOnly.length > 0) {
      logger.warn("reload: these settings take effect only after a restart", {
        fields: restartOnly,
      });
    }
    logger.info("reloaded", { services: Object.keys(next.services).length });
  },
  onReloadResult: (result) => ops.reloads.inc({ result }),
});

logger.info("ready", {
  quic: formatHostPort(relay.addr),
  metrics: ops.address,
  services: Object.keys(config.services),
});
