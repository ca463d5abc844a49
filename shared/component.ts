/**
 * The pieces every component's `main.ts` composes: TLS files read before anything binds,
 * the ops listener with lifecycle metrics, and readiness reporting.
 *
 * @module
 */
import { formatHostPort, type HostPort } from "./config/address.ts";
import type { Logger } from "./log.ts";
import { createLifecycleMetrics, type LifecycleMetrics } from "./ops/lifecycle_metrics.ts";
import { createMetricsRegistry } from "./ops/metrics.ts";
import { type OpsListener, startOpsListener, type StatusReport } from "./ops/ops_listener.ts";
import type { HandlerErrorReporter, TlsMaterial } from "./quic/mod.ts";
import { readTlsFiles, type TlsPaths } from "./tls_files.ts";
import type { Registry } from "prom-client";
import { Counter } from "prom-client";

/** Reads the TLS files or exits 2 (a config error) naming the file. */
export function readTlsOrExit(component: string, paths: TlsPaths): TlsMaterial {
  try {
    return readTlsFiles(paths);
  } catch (error) {
    console.error(
      `ztna ${component}: invalid config: ${error instanceof Error ? error.message : error}`,
    );
    Deno.exit(2);
  }
}

/** Observability of one component: its registry, lifecycle metrics and probe state. */
export interface ComponentOps {
  readonly registry: Registry;
  readonly lifecycle: LifecycleMetrics;
  /** SIGHUP reloads by result (`applied`, `rejected`). */
  readonly reloads: Counter<"result">;
  /**
   * For every QUIC endpoint of the component: logs a handler's exception with the
   * connection id, counts it in `ztna_<component>_handler_errors_total{where}`; the endpoint
   * then closes that connection with INTERNAL.
   */
  readonly onHandlerError: HandlerErrorReporter;
  /** The ops listener's bound address (`host:port`), or null when metrics are off. */
  readonly address: string | null;
  /** Marks the component ready (first time: records the startup duration). */
  ready(): void;
  /** Flips readiness to 503 for the drain. */
  startDraining(): void;
  /** True while draining. */
  readonly draining: boolean;
  /** Records the shutdown duration and stops the listener. */
  close(): Promise<void>;
}

/** Options for {@linkcode startComponentOps}. */
export interface ComponentOpsOptions {
  component: "relay" | "connector" | "agent";
  /** Listener address from config; null = off. */
  address: HostPort | null;
  logger: Logger;
  /** Component readiness (e.g. registered with a relay), read per probe. */
  isReady: () => boolean;
  /** Extra `/health` fields. */
  detail: () => Record<string, unknown>;
  /** `/status` and `/status.json`, for a component that has them. */
  status?: () => StatusReport;
}

/** Creates the registry and starts the ops listener (unless it is off). */
export function startComponentOps(options: ComponentOpsOptions): ComponentOps {
  const { component, address, logger, isReady, detail, status } = options;
  const prefix = `ztna_${component}_`;
  const registry = createMetricsRegistry(prefix);
  let draining = false;
  let wasReady = false;
  let drainStarted = 0;
  const ready = () => wasReady && isReady() && !draining;
  const lifecycle = createLifecycleMetrics(registry, prefix, ready);
  const badRequests = new Counter({
    name: `${prefix}ops_bad_requests_total`,
    help: "Requests to the metrics/health listener rejected, by HTTP status (408 also: evicted, " +
      "or a slow reader; 503: refused connections).",
    labelNames: ["status"],
    registers: [registry],
  });
  const reloads = new Counter({
    name: `${prefix}reloads_total`,
    help: "SIGHUP config reloads, by result (applied, rejected).",
    labelNames: ["result"],
    registers: [registry],
  });
  const handlerErrors = new Counter({
    name: `${prefix}handler_errors_total`,
    help: "Exceptions in connection handlers, by entry point (packet, timer, flush, stream " +
      "events, ...); each closed its one connection with code 5, the process lives on.",
    labelNames: ["where"],
    registers: [registry],
  });
  const onHandlerError: HandlerErrorReporter = (conn, error, where) => {
    handlerErrors.inc({ where });
    logger.error("connection handler failed: closing the connection", {
      conn: conn.id,
      where,
      error,
    });
  };
  // Both series exist from the start, so a rate() over them is defined before the first reload.
  for (const result of ["applied", "rejected"]) reloads.inc({ result }, 0);
  let listener: OpsListener | null = null;
  if (address !== null) {
    listener = startOpsListener({
      hostname: address.host,
      port: address.port,
      registry,
      logger,
      health: () => ({ ready: wasReady && isReady(), draining, detail: detail() }),
      status,
      onBadRequest: (_reason, status) => badRequests.inc({ status: String(status) }),
    });
  }
  return {
    registry,
    lifecycle,
    reloads,
    onHandlerError,
    address: listener
      ? formatHostPort({ host: listener.addr.hostname, port: listener.addr.port })
      : null,
    ready() {
      if (wasReady) return;
      wasReady = true;
      lifecycle.startup.observe(performance.now() / 1000);
    },
    startDraining() {
      draining = true;
      drainStarted = performance.now();
      lifecycle.draining.set(1);
    },
    get draining() {
      return draining;
    },
    async close() {
      if (drainStarted > 0) lifecycle.shutdown.observe((performance.now() - drainStarted) / 1000);
      await listener?.close();
      registry.clear();
    },
  };
}
