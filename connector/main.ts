/**
 * Connector entrypoint: `deno task connector --config connector.json`.
 *
 * @module
 */
import { readTlsOrExit, startComponentOps } from "../shared/component.ts";
import {
  connectorConfigSchema,
  loadConfig,
  loadConfigOrExit,
  processConfigSource,
} from "../shared/config/mod.ts";
import { handleSignals } from "../shared/lifecycle.ts";
import { createLogger } from "../shared/log.ts";
import { checkSandbox } from "../shared/sandbox.ts";
import { readTlsFiles } from "../shared/tls_files.ts";
import { assertBackendsReachable } from "./backend_scope.ts";
import { startConnector } from "./connector.ts";
import { createConnectorMetrics } from "./metrics.ts";

const config = loadConfigOrExit(connectorConfigSchema, "connector");
const logger = createLogger("connector", { level: config.log_level });
// Before anything binds: a sandbox wider than the config needs is reported (or refused).
checkSandbox({
  component: "connector",
  logger,
  strict: config.strict_sandbox,
  unscopedNet: false,
  writeProbes: [config.tls.cert, config.tls.key, config.tls.ca].filter((p) => p !== undefined),
});
const tls = readTlsOrExit("connector", config.tls);

const ops = startComponentOps({
  component: "connector",
  address: config.metrics,
  logger,
  isReady: () => connector.isReady(),
  detail: () => connector.health(),
});
// The probes run only after this synchronous start-up, so `connector` is set by then.
const connector = startConnector(config, {
  logger,
  tls,
  metrics: createConnectorMetrics(ops.registry),
  onRegistered: () => ops.ready(),
});

handleSignals({
  logger,
  shutdownTimeoutMs: config.shutdown_timeout_ms,
  async shutdown() {
    ops.startDraining();
    await connector.drain(config.drain_ms);
    await ops.close();
  },
  reload() {
    // Validate everything before changing anything: config, TLS files, sandbox scope.
    const next = loadConfig(connectorConfigSchema, processConfigSource(connectorConfigSchema));
    const nextTls = readTlsFiles(next.tls);
    assertBackendsReachable(next.services);
    connector.setTls(nextTls);
    connector.setServices(next.services);
    logger.info("reloaded: services applied; new certificates apply to the next relay dials");
  },
  onReloadResult: (result) => ops.reloads.inc({ result }),
});

logger.info("ready", {
  metrics: ops.address,
  relays: config.relays.map((r) => `${r.host}:${r.port}`),
  services: Object.keys(config.services),
});
