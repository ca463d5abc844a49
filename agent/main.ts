/**
 * Agent entrypoint: `deno task agent --config agent.json`.
 *
 * @module
 */
import { runComponent } from "../shared/component_main.ts";
import { formatHostPort } from "../shared/config/address.ts";
import { agentConfigSchema } from "../shared/config/mod.ts";
import { readTlsFiles } from "../shared/tls_files.ts";
import { startAgent } from "./agent.ts";
import { createAgentMetrics } from "./metrics.ts";

runComponent({
  component: "agent",
  schema: agentConfigSchema,
  unscopedNet: false,
  start: (config, { logger, tls, ops, audit, tracer }) =>
    startAgent(config, {
      logger,
      audit,
      tracer,
      onHandlerError: ops.onHandlerError,
      tls,
      metrics: createAgentMetrics(ops.registry),
      onConnected: () => ops.ready(),
    }),
  reload(next, agent, logger) {
    agent.setTls(readTlsFiles(next.tls));
    logger.info("reloaded: new certificates apply to the next relay dial");
  },
  readyFields: (config, agent) => ({
    listen: agent.listening,
    forwards: agent.forwards,
    relays: config.relays.map(formatHostPort),
  }),
});
