/**
 * Reads a component's TLS files (PEM) into the material the QUIC endpoint takes.
 *
 * @module
 */
import type { TlsMaterial } from "./quic/mod.ts";

/** Paths of the PEM files, as in every component's `tls` config. */
export interface TlsPaths {
  /** Absent for a connector or agent that authenticates with a token only. */
  cert?: string;
  /** Absent together with `cert`. */
  key?: string;
  ca: string;
}

/** Reads the three PEM files; throws an Error naming the file that could not be read. */
export function readTlsFiles(paths: TlsPaths): TlsMaterial {
  const read = (what: string, path: string): Uint8Array => {
    try {
      const bytes = Deno.readFileSync(path);
      if (!new TextDecoder().decode(bytes.subarray(0, 64)).includes("-----BEGIN")) {
        throw new Error("not a PEM file");
      }
      return bytes;
    } catch (error) {
      throw new Error(
        `cannot read tls.${what} ${path}: ${error instanceof Error ? error.message : error}`,
      );
    }
  };
  return {
    cert: paths.cert === undefined ? undefined : read("cert", paths.cert),
    key: paths.key === undefined ? undefined : read("key", paths.key),
    ca: read("ca", paths.ca),
  };
}
