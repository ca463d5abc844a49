/**
 * Connector entrypoint: `deno task connector --config connector.json`.
 *
 * @module
 */
import { runComponent } from "../shared/component_main.ts";
import { formatHostPort } from "../shared/config/address.ts";
import { connectorConfigSchema } from "../shared/config/mod.ts";
import { readTlsFiles } from "../shared/tls_files.ts";
import { assertBackendsReachable } from "./backend_scope.ts";
import { startConnector } from "./connector.ts";
import { createConnectorMetrics } from "./metrics.ts";

runComponent({
  component: "connector",
  schema: connectorConfigSchema,
  unscopedNet: false,
  start: (config, { logger, tls, ops, audit, tracer }) =>
    startConnector(config, {
      logger,
      audit,
      tracer,
      onHandlerError: ops.onHandlerError,
      tls,
      metrics: createConnectorMetrics(ops.registry),
      onRegistered: () => ops.ready(),
    }),
  reload(next, connector, logger) {
    // Validate everything before changing anything: TLS files, sandbox scope.
    const nextTls = readTlsFiles(next.tls);
    assertBackendsReachable(next.services, next.hosts);
    connector.setTls(nextTls);
    connector.setServices(next.services, next.agents);
    logger.info("reloaded: services applied; new certificates apply to the next relay dials");
  },
  readyFields: (config) => ({
    relays: config.relays.map(formatHostPort),
    services: Object.keys(config.services),
  }),
});
