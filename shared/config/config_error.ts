/**
 * The error every config problem is reported as.
 *
 * @module
 */

/** Where a config value came from, in increasing precedence. */
export type ConfigSourceKind = "default" | "file" | "env" | "flag";

/**
 * An invalid or unreadable config, naming the field (a dotted path such as
 * `services.echo.agents[0]`) and the source that set it.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError } from "./config_error.ts";
 *
 * const error = new ConfigError("listen", "env", "port must be an integer 0..65535");
 * assert.equal(error.message, "listen (from env): port must be an integer 0..65535");
 * ```
 */
export class ConfigError extends Error {
  /** Dotted path of the offending field, or `config` for the config file itself. */
  readonly field: string;
  /** The source that set the offending value (`default` when nothing set it). */
  readonly source: ConfigSourceKind;
  /** What is wrong, without the field and source. */
  readonly detail: string;

  /**
   * @param field Dotted path of the offending field.
   * @param source The source that set the value.
   * @param detail What is wrong.
   */
  constructor(field: string, source: ConfigSourceKind, detail: string) {
    super(`${field} (from ${source}): ${detail}`);
    this.name = "ConfigError";
    this.field = field;
    this.source = source;
    this.detail = detail;
  }
}
