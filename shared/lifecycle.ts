/**
 * Process lifecycle shared by the relay, connector and agent: signals, bounded graceful
 * shutdown and reload.
 *
 * @module
 */
import type { Logger } from "./log.ts";

/** Signals closer together than this after the first count as one shutdown request. */
export const DUPLICATE_SIGNAL_MS = 500;

/** Options for {@linkcode handleSignals}. */
export interface LifecycleOptions {
  logger: Logger;
  /** Hard bound on `shutdown`; past it the process exits 1. */
  shutdownTimeoutMs: number;
  /** Graceful shutdown: stop accepting, drain, close. Resolves when done. */
  shutdown: (signal: Deno.Signal) => Promise<void>;
  /**
   * Called on SIGHUP; validates everything first and throws (changing nothing) when the new
   * config is unusable.
   */
  reload?: () => Promise<void> | void;
  /** Told how each reload ended, for the `reloads_total{result}` counter. */
  onReloadResult?: (result: "applied" | "rejected") => void;
  /** Exits the process; injectable for tests. */
  exit?: (code: number) => void;
}

/**
 * Installs SIGTERM/SIGINT (graceful, bounded; a second signal exits at once) and SIGHUP
 * (reload) handlers. Returns a function that removes them.
 */
export function handleSignals(options: LifecycleOptions): () => void {
  const { logger, shutdownTimeoutMs, shutdown, reload, onReloadResult, exit = Deno.exit } = options;
  let stopping = false;
  let firstSignalAt = 0;

  const onStop = (signal: Deno.Signal) => () => {
    // A terminal's Ctrl-C reaches the whole process group, and a supervisor (launcher, dev)
    // forwards it too: signals this close together are one request, not an insistence.
    if (stopping && performance.now() - firstSignalAt < DUPLICATE_SIGNAL_MS) return;
    if (stopping) {
      logger.warn("second signal: exiting now", { signal });
      exit(1);
      return;
    }
    stopping = true;
    firstSignalAt = performance.now();
    logger.info("shutdown requested", { signal, timeout_ms: shutdownTimeoutMs });
    const hardStop = setTimeout(() => {
      logger.error("shutdown timed out: exiting", { timeout_ms: shutdownTimeoutMs });
      exit(1);
    }, shutdownTimeoutMs);
    shutdown(signal).then(
      () => {
        clearTimeout(hardStop);
        logger.info("stopped");
        exit(0);
      },
      (error) => {
        clearTimeout(hardStop);
        logger.error("shutdown failed", { error });
        exit(1);
      },
    );
  };
  const onHup = () => {
    if (stopping || reload === undefined) return;
    Promise.resolve()
      .then(reload)
      .then(
        () => onReloadResult?.("applied"),
        (error) => {
          logger.error("reload rejected: keeping the running config", { error });
          onReloadResult?.("rejected");
        },
      );
  };

  const handlers: [Deno.Signal, () => void][] = [
    ["SIGTERM", onStop("SIGTERM")],
    ["SIGINT", onStop("SIGINT")],
  ];
  if (Deno.build.os !== "windows") handlers.push(["SIGHUP", onHup]);
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  return () => {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  };
}
