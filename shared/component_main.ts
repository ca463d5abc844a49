/**
 * The start-up sequence every component's `main.ts` runs: load config (exit 2 on error),
 * check the sandbox, read TLS material, start the ops listener, start the component,
 * install signal handling (drain, reload) and print the `ready` line.
 *
 * @module
 */
import type { z } from "zod";
import { type ComponentOps, readTlsOrExit, startComponentOps } from "./component.ts";
import type { StatusReport } from "./ops/ops_listener.ts";
import type { HostPort } from "./config/address.ts";
import { loadConfig, loadConfigOrExit, processConfigSource } from "./config/mod.ts";
import { handleSignals } from "./lifecycle.ts";
import { createLogger, type Logger, type LogLevel } from "./log.ts";
import type { TlsMaterial } from "./quic/mod.ts";
import { checkSandbox } from "./sandbox.ts";
import { configureUdpSockets, type UdpSocketKind } from "./quic/udp_socket.ts";
import { addressKey, BIND_FAILED_EXIT, BindError } from "./bind_error.ts";
import {
  type AuditDestination,
  auditFilePaths,
  type AuditLog,
  createAuditLog,
} from "./audit_log.ts";
import { registerAuditMetrics } from "./ops/audit_metrics.ts";
import { createFlowTracer, type FlowTracer } from "./trace.ts";

/** What every component config has that the start-up sequence reads. */
export interface BaseConfig {
  metrics: HostPort | null;
  tls: { cert?: string; key?: string; ca: string };
  log_level: LogLevel;
  strict_sandbox: boolean;
  drain_ms: number;
  shutdown_timeout_ms: number;
  udp: { socket: "auto" | UdpSocketKind; buffer_bytes: number };
  audit: {
    destination: "stdout" | "file" | "off";
    file?: string;
    max_bytes: number;
    keep: number;
    queue: number;
  };
}

/** What the start-up sequence needs from a running component. */
export interface ComponentInstance {
  isReady(): boolean;
  health(): Record<string, unknown>;
  drain(drainMs: number): Promise<void>;
}

/** The parts a component's `start` receives. */
export interface StartContext {
  logger: Logger;
  tls: TlsMaterial;
  ops: ComponentOps;
  /** The component's audit log (docs/AUDIT.md). */
  audit: AuditLog;
  /** Spans of flow setup (exported only when `OTEL_DENO=true`). */
  tracer: FlowTracer;
}

/** One component's entrypoint, described. */
export interface ComponentSpec<C extends BaseConfig, I extends ComponentInstance> {
  component: "relay" | "connector" | "agent";
  schema: z.ZodType<C>;
  /** Only the relay may hold unscoped network access. */
  unscopedNet: boolean;
  /** Starts the component; it calls `ops.ready()` when it first becomes ready. */
  start(config: C, context: StartContext): I;
  /**
   * Applies a reloaded config (SIGHUP); `initial` is the config the process started with.
   * Must validate everything before changing anything: a throw leaves the running config in
   * place.
   */
  reload(next: C, instance: I, logger: Logger, initial: C): void;
  /** `/status` and `/status.json` on the ops listener (only the relay has them). */
  status?(instance: I): StatusReport;
  /** Fields of the `ready` log line besides `metrics`: the bound addresses. */
  readyFields(config: C, instance: I): Record<string, unknown>;
}

/** Runs a component process from this process's arguments and environment. */
export function runComponent<C extends BaseConfig, I extends ComponentInstance>(
  spec: ComponentSpec<C, I>,
): void {
  const { component, schema } = spec;
  const config = loadConfigOrExit(schema, component);
  const logger = createLogger(component, { level: config.log_level });
  exitOnUncaughtError(logger);
  // Before anything binds: a sandbox wider than the config needs is reported (or refused).
  checkSandbox({
    component,
    logger,
    strict: config.strict_sandbox,
    unscopedNet: spec.unscopedNet,
    libcNeeded: config.udp.socket !== "portable",
    writeProbes: [config.tls.cert, config.tls.key, config.tls.ca].filter((p) => p !== undefined),
    allowedWrites: auditWrites(config.audit),
  });
  chooseUdpSockets(component, config.udp, logger);
  const audit = createAuditLog({
    component,
    destination: auditDestination(config.audit),
    maxQueue: config.audit.queue,
  });
  const tracer = createFlowTracer(component);
  const tls = readTlsOrExit(component, config.tls);
  let ops: ComponentOps;
  let instance: I;
  try {
    ops = startComponentOps({
      component,
      address: config.metrics,
      logger,
      isReady: () => instance.isReady(),
      detail: () => instance.health(),
      status: spec.status === undefined ? undefined : () => spec.status!(instance),
    });
    registerAuditMetrics(ops.registry, `ztna_${component}_`, audit);
    // The probes run only after this synchronous start-up, so `instance` is set by then.
    instance = spec.start(config, { logger, tls, ops, audit, tracer });
  } catch (error) {
    if (!(error instanceof BindError)) throw error;
    // One line naming the address and the key it came from, like a config error.
    const key = addressKey(config, error.host, error.port);
    console.error(`ztna ${component}: ${error.message}${key === null ? "" : ` (from ${key})`}`);
    Deno.exit(BIND_FAILED_EXIT);
  }

  handleSignals({
    logger,
    shutdownTimeoutMs: config.shutdown_timeout_ms,
    async shutdown() {
      ops.startDraining();
      await instance.drain(config.drain_ms);
      // Bounded: a stalled destination must not hold the exit past the shutdown timeout.
      await audit.close(1000);
      await ops.close();
    },
    reload() {
      // Same sources as at start (file, env, flags); a bad file keeps the running config.
      spec.reload(loadConfig(schema, processConfigSource(schema)), instance, logger, config);
    },
    onReloadResult: (result) => ops.reloads.inc({ result }),
  });

  logger.info("ready", { ...spec.readyFields(config, instance), metrics: ops.address });
}

/** Where the audit config sends records. */
function auditDestination(audit: BaseConfig["audit"]): AuditDestination {
  if (audit.destination !== "file") return { kind: audit.destination };
  return { kind: "file", path: audit.file!, maxBytes: audit.max_bytes, keep: audit.keep };
}

/** The files the audit config writes: the only write access the sandbox may hold. */
function auditWrites(audit: BaseConfig["audit"]): string[] {
  return audit.destination === "file" && audit.file !== undefined
    ? auditFilePaths(audit.file, audit.keep)
    : [];
}

/**
 * Exit status after an exception no handler caught (EX_SOFTWARE): the process state is
 * unknown, so it stops, and the supervisor restarts it.
 */
export const UNCAUGHT_ERROR_EXIT = 70;

/**
 * Logs an uncaught exception or unhandled rejection as one JSON line and exits with
 * {@linkcode UNCAUGHT_ERROR_EXIT}. Connection handlers never get here (the QUIC endpoint
 * contains their errors); this is the last line for everything else.
 */
function exitOnUncaughtError(logger: Logger): void {
  const exit = (kind: string, error: unknown) => {
    logger.error(`${kind}: exiting`, { error, exit_code: UNCAUGHT_ERROR_EXIT });
    Deno.exit(UNCAUGHT_ERROR_EXIT);
  };
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    exit("uncaught exception", event.error);
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    exit("unhandled rejection", event.reason);
  });
}

/**
 * Sets the process's UDP socket kind from `udp` and logs it; `batched` demanded where it
 * cannot run is a config error (exit 2), like any other.
 */
function chooseUdpSockets(
  component: string,
  udp: BaseConfig["udp"],
  logger: Logger,
): void {
  try {
    const choice = configureUdpSockets(
      { kind: udp.socket, bufferBytes: udp.buffer_bytes },
      (message, fields) => logger.warn(message, fields),
    );
    logger.info("udp sockets", { ...choice, buffer_bytes: udp.buffer_bytes });
  } catch (error) {
    console.error(`ztna ${component}: config field udp.socket: ${(error as Error).message}`);
    Deno.exit(2);
  }
}
