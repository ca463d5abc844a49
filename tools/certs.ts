/**
 * Creates a development CA and the certificates for mTLS between relay, connectors and agents.
 *
 * ```sh
 * deno task certs --out certs --client connector-1 --client agent-alice \
 *   [--ca-dir certs-ca] [--relay-name relay.example.com] [--force]
 * ```
 *
 * Writes `ca.pem`, `relay.pem`, `relay.key`, `<client>.pem` and `<client>.key` into the output
 * folder, and the CA's own pair (`ca.pem`, `ca.key`) into the CA folder (default `<out>-ca`,
 * mode 0700): the CA key never sits beside the identities' keys, so mounting or copying the
 * output folder (or one component's files from it) cannot leak the key that signs identities.
 * Keys are written with mode 0600. An existing CA is reused, and existing certificates are
 * kept, so adding a client later does not invalidate the others; `--force` replaces everything.
 * Every check runs before the first file is written. Exit codes: 0 done, 1 the folders' state
 * prevents it (nothing written) or a folder cannot be created or written (one line naming the
 * flag), 2 bad arguments.
 *
 * `deno task certs` grants read and write everywhere and nothing else (no network, no
 * subprocess): this offline tool must write wherever an operator points `--out` and
 * `--ca-dir`, and a scope fixed in deno.json could only be the checkout.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { isAbsolute, join, relative, resolve, sep as SEPARATOR } from "node:path";
import {
  assertDnsName,
  assertIdentityName,
  type CertificateAndKey,
  certificateIssuedBy,
  createCa,
  createClientCertificate,
  createRelayCertificate,
} from "../shared/identity/dev_ca.ts";

const USAGE =
  `Usage: tools/certs.ts --out DIR [--ca-dir DIR] [--client NAME ...] [--relay-name DNS ...] [--force]

  --out DIR          folder for ca.pem, relay.pem/relay.key and NAME.pem/NAME.key
  --ca-dir DIR       folder for the CA's ca.pem/ca.key, outside --out (default DIR-ca)
  --client NAME      a connector or agent identity (certificate CN); repeatable
  --relay-name DNS   an extra DNS name for the relay certificate (besides localhost, relay); repeatable
  --force            replace the CA and every certificate instead of reusing existing ones
  --help             show this text`;

/** What the command line asks for. */
export interface CertsRequest {
  /** The output folder. */
  out: string;
  /** The CA folder (holds the CA key; never the output folder). */
  caDir: string;
  /** Client identity names, deduplicated, in the order given. */
  clients: string[];
  /** Extra relay DNS names. */
  relayNames: string[];
  /** Replace existing files. */
  force: boolean;
}

/** A usage error: the message is printed with the usage text and the exit code is 2. */
export class UsageError extends Error {
  /** @param message What is wrong with the arguments. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

// File names the CA and relay own; a client with one of these names would overwrite them.
const RESERVED_NAMES = new Set(["ca", "relay"]);

/**
 * Parses and validates the command line.
 *
 * @example Usage
 * ```ts
 * import { parseCertsArgs } from "./certs.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual(parseCertsArgs(["--out", "certs", "--client", "agent-1"]), {
 *   out: "certs",
 *   caDir: "certs-ca",
 *   clients: ["agent-1"],
 *   relayNames: [],
 *   force: false,
 * });
 * ```
 *
 * @param args The arguments after the script name.
 * @returns The request, or `null` when `--help` was asked for.
 * @throws {UsageError} On unknown options, a missing `--out`, an invalid name, or a `--ca-dir`
 * that is `--out` or inside it.
 */
export function parseCertsArgs(args: string[]): CertsRequest | null {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        out: { type: "string" },
        "ca-dir": { type: "string" },
        client: { type: "string", multiple: true },
        "relay-name": { type: "string", multiple: true },
        force: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  if (values.help) return null;
  if (values.out === undefined || values.out === "") throw new UsageError("--out DIR is required");
  const clients = [...new Set(values.client ?? [])];
  const relayNames = [...new Set(values["relay-name"] ?? [])];
  try {
    for (const name of clients) {
      assertIdentityName(name);
      // Case-insensitive: on such file systems `CA.pem` is `ca.pem`.
      if (RESERVED_NAMES.has(name.toLowerCase())) {
        throw new RangeError(
          `Cannot use client name as 'name' must not be "ca" or "relay": current value is "${name}"`,
        );
      }
    }
    for (const name of relayNames) assertDnsName(name);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const caDir = values["ca-dir"] ?? `${values.out.replace(/\/+$/, "")}-ca`;
  // Inside --out, the CA key would travel with every copy or mount of the identities' folder.
  const fromOut = relative(resolve(values.out), resolve(caDir));
  if (fromOut !== ".." && !fromOut.startsWith(`..${SEPARATOR}`) && !isAbsolute(fromOut)) {
    throw new UsageError(
      "--ca-dir must not be the --out folder or inside it: the CA key stays apart",
    );
  }
  return { out: values.out, caDir, clients, relayNames, force: values.force ?? false };
}

/** A refusal caused by the output folder's contents; exit code 1, nothing written. */
class StateError extends Error {}

/** A folder or file that cannot be created or written; exit code 1. */
class WriteError extends Error {}

interface PlannedFile {
  /** The option whose folder holds the file, named in errors. */
  flag: "--out" | "--ca-dir";
  path: string;
  data: string;
  mode: number;
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/** Reads `<base>.pem` and `<base>.key`; both or neither must exist. */
async function readPair(out: string, base: string): Promise<CertificateAndKey | null> {
  const [cert, key] = await Promise.all([
    readIfExists(join(out, `${base}.pem`)),
    readIfExists(join(out, `${base}.key`)),
  ]);
  if (cert !== null && key !== null) return { cert, key };
  if (cert === null && key === null) return null;
  const [found, missing] = cert === null ? ["key", "pem"] : ["pem", "key"];
  throw new StateError(
    `${
      join(out, `${base}.${found}`)
    } exists without ${base}.${missing}: restore it or pass --force`,
  );
}

/**
 * Works out every file to write for `request` without writing anything.
 *
 * @param request The parsed command line.
 * @returns The files to write and the existing files kept.
 */
async function plan(request: CertsRequest): Promise<{ write: PlannedFile[]; kept: string[] }> {
  const { out, caDir, force } = request;
  const write: PlannedFile[] = [];
  const kept: string[] = [];
  const emit = (flag: PlannedFile["flag"], dir: string, base: string, pair: CertificateAndKey) => {
    write.push({ flag, path: join(dir, `${base}.pem`), data: pair.cert, mode: 0o644 });
    write.push({ flag, path: join(dir, `${base}.key`), data: pair.key, mode: 0o600 });
  };

  // The old layout kept the CA key with the identities; refuse to go on beside it.
  if (await readIfExists(join(out, "ca.key")) !== null) {
    throw new StateError(
      `${join(out, "ca.key")} sits beside the identities' keys: move it and ca.pem to ` +
        `${caDir} (mkdir -m 700 ${caDir} && mv ${join(out, "ca.key")} ${caDir}/ && ` +
        `cp ${join(out, "ca.pem")} ${caDir}/), then run this again`,
    );
  }
  const existingCa = force ? null : await readPair(caDir, "ca");
  const ca = existingCa ?? await createCa();
  if (existingCa === null) emit("--ca-dir", caDir, "ca", ca);
  else kept.push(join(caDir, "ca.pem"));
  // Components verify peers against the CA certificate: it goes with the identities.
  write.push({ flag: "--out", path: join(out, "ca.pem"), data: ca.cert, mode: 0o644 });

  const leaves: [string, () => Promise<CertificateAndKey>][] = [
    ["relay", () => createRelayCertificate(ca, { dnsNames: request.relayNames })],
    ...request.clients.map((name): [string, () => Promise<CertificateAndKey>] => [
      name,
      () => createClientCertificate(ca, name),
    ]),
  ];
  for (const [base, issue] of leaves) {
    const existing = force ? null : await readPair(out, base);
    if (existing === null) {
      emit("--out", out, base, await issue());
    } else if (await certificateIssuedBy(existing.cert, ca.cert)) {
      kept.push(join(out, `${base}.pem`));
    } else {
      // Kept as is it would fail every handshake; replacing it silently could break a deployment.
      throw new StateError(
        `${join(out, `${base}.pem`)} was not issued by ${join(caDir, "ca.pem")}: ` +
          `remove it or pass --force`,
      );
    }
  }
  return { write, kept };
}

async function writeFile(file: PlannedFile): Promise<void> {
  try {
    // Removed first so the mode applies: `mode` only takes effect when a file is created, and
    // an old key file might be readable by others.
    await Deno.remove(file.path).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
    await Deno.writeTextFile(file.path, file.data, { mode: file.mode, createNew: true });
  } catch (error) {
    throw new WriteError(`cannot write ${file.path} (${file.flag}): ${messageOf(error)}`);
  }
}

/** Creates `dir` (and its parents) for `flag`; with `mode`, also sets it on an existing one. */
async function makeFolder(flag: PlannedFile["flag"], dir: string, mode?: number): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true, mode });
    // mkdir's mode is masked by the umask and ignored for an existing folder.
    if (mode !== undefined) await Deno.chmod(dir, mode);
  } catch (error) {
    throw new WriteError(`cannot create the ${flag} folder ${dir}: ${messageOf(error)}`);
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Runs the command and returns its exit code.
 *
 * @param args The arguments after the script name.
 * @returns 0 on success, 1 when the output folder's state prevents it, 2 on bad arguments.
 */
export async function main(args: string[]): Promise<number> {
  let request: CertsRequest | null;
  try {
    request = parseCertsArgs(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`certs: ${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (request === null) {
    console.log(USAGE);
    return 0;
  }
  try {
    await makeFolder("--out", request.out);
    await makeFolder("--ca-dir", request.caDir, 0o700);
    const { write, kept } = await plan(request);
    for (const file of write) {
      await writeFile(file);
      console.log(`wrote ${file.path}`);
    }
    for (const path of kept) console.error(`kept ${path} (exists; --force replaces it)`);
    return 0;
  } catch (error) {
    if (
      error instanceof StateError || error instanceof WriteError || error instanceof RangeError
    ) {
      console.error(`certs: ${error.message}`);
      return 1;
    }
    if (
      error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable
    ) {
      // Reading an existing certificate or key failed.
      console.error(`certs: cannot read the --out or --ca-dir folder: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
