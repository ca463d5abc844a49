/**
 * Agent entrypoint: `deno task agent --config agent.json`.
 *
 * @module
 */
import { readTlsOrExit, startComponentOps } from "../shared/component.ts";
import {
  agentConfigSchema,
  loadConfig,
  loadConfigOrExit,
  processConfigSource,
} from "../shared/config/mod.ts";
import { handleSignals } from "../shared/lifecycle.ts";
import { createLogger } from "../shared/log.ts";
import { checkSandbox } from "../shared/sandbox.ts";
import { readTlsFiles } from "../shared/tls_files.ts";
import { startAgent } from "./agent.ts";
import { createAgentMetrics } from "./metrics.ts";

const config = loadConfigOrExit(agentConfigSchema, "agent");
const logger = createLogger("agent", { level: config.log_level });
// Before anything binds: a sandbox wider than the config needs is reported (or refused).
checkSandbox({
  component: "agent",
  logger,
  strict: config.strict_sandbox,
  unscopedNet: false,
  writeProbes: [config.tls.cert, config.tls.key, config.tls.ca].filter((p) => p !== undefined),
});
const tls = readTlsOrExit("agent", config.tls);

const ops = startComponentOps({
  component: "agent",
  address: config.metrics,
  logger,
  isReady: () => agent.isReady(),
  detail: () => agent.health(),
});
// The probes run only after this synchronous start-up, so `agent` is set by then.
const agent = startAgent(config, {
  logger,
  tls,
  metrics: createAgentMetrics(ops.registry),
  onConnected: () => ops.ready(),
});

handleSignals({
  logger,
  shutdownTimeoutMs: config.shutdown_timeout_ms,
  async shutdown() {
    ops.startDraining();
    await agent.drain(config.drain_ms);
    await ops.close();
  },
  reload() {
    const next = loadConfig(agentConfigSchema, processConfigSource(agentConfigSchema));
    agent.setTls(readTlsFiles(next.tls));
    logger.info("reloaded: new certificates apply to the next relay dial");
  },
  onReloadResult: (result) => ops.reloads.inc({ result }),
});

logger.info("ready", {
  listen: agent.listening,
  metrics: ops.address,
  relays: config.relays.map((r) => `${r.host}:${r.port}`),
});
