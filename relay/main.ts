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
import { readTlsFiles } from "../shared/tls_files.ts";
import { createRelayMetrics } from "./metrics.ts";
import { startRelay } from "./relay.ts";

const config = loadConfigOrExit(relayConfigSchema, "relay");
const logger = createLogger("relay", { level: config.log_level });
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
    relay.setPolicy(next.services);
    relay.setTls(nextTls);
    logger.info("reloaded", { services: Object.keys(next.services).length });
  },
});

logger.info("ready", {
  quic: formatHostPort(relay.addr),
  metrics: ops.address,
  services: Object.keys(config.services),
});
