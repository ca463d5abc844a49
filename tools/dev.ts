/**
 * `deno task dev`: a complete ztna-edge on loopback. Generates dev certificates into
 * `.state/dev/`, starts a demo echo service (UDP and TCP), a relay and a connector (each in
 * its own permission sandbox), and prints the agent command to paste into another terminal.
 * Ctrl-C drains and stops everything.
 *
 * @module
 */
import { join } from "node:path";
import { readLines } from "./text_lines.ts";
import { main as certs } from "./certs.ts";
import { type Component, loadComponentConfig, PROJECT_ROOT, runArgs } from "./permissions.ts";

const STATE = join(PROJECT_ROOT, ".state", "dev");
const CERTS = join(STATE, "certs");
/** The dev CA, kept apart from the identities' files as in production. */
const CA_DIR = join(STATE, "ca");
const SERVICE = "echo";
const tls = (name: string) => ({
  cert: join(CERTS, `${name}.pem`),
  key: join(CERTS, `${name}.key`),
  ca: join(CERTS, "ca.pem"),
});

/** A started child process and the fields of its first `ready` line. */
interface Started {
  child: Deno.ChildProcess;
  ready: Record<string, unknown>;
}

/**
 * Spawns `args`, copies its stdout to ours, and resolves with the first JSON line whose
 * `msg` matches `readyMsg`. Rejects if the process exits first or after `timeoutMs`.
 */
async function start(
  name: string,
  args: string[],
  readyMsg: string,
  timeoutMs = 20_000,
): Promise<Started> {
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stdin: "null" })
    .spawn();
  const lines = readLines(child.stdout);
  const { promise: ready, resolve: resolveReady } = Promise.withResolvers<
    Record<string, unknown>
  >();
  (async () => {
    for await (const line of lines) {
      console.log(line);
      try {
        const fields = JSON.parse(line);
        if (fields.msg === readyMsg) resolveReady(fields);
      } catch {
        // Not JSON (a runtime warning): shown as is.
      }
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const failed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name} not ready in ${timeoutMs} ms`)), timeoutMs);
    child.status.then((s) => reject(new Error(`${name} exited with ${s.code} before ready`)));
  });
  try {
    return { child, ready: await Promise.race([ready, failed]) };
  } finally {
    clearTimeout(timer);
  }
}

async function writeConfig(name: string, config: unknown): Promise<string> {
  const path = join(STATE, `${name}.json`);
  await Deno.writeTextFile(path, JSON.stringify(config, null, 2) + "\n");
  return path;
}

async function startComponent(component: Component, configPath: string): Promise<Started> {
  const { config } = loadComponentConfig(component, ["--config", configPath], {});
  return await start(
    component,
    runArgs(component, config, configPath, ["--config", configPath]),
    "ready",
  );
}

/** A free loopback port of `transport` for an agent listener (bound and released). */
function freePort(transport: "udp" | "tcp"): number {
  const probe = transport === "udp"
    ? Deno.listenDatagram({ transport, hostname: "127.0.0.1", port: 0 })
    : Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  return port;
}

if (import.meta.main) {
  await Deno.mkdir(STATE, { recursive: true });
  // Dev certificates are disposable: a folder from before the CA key moved out is remade.
  try {
    await Deno.stat(join(CERTS, "ca.key"));
    await Deno.remove(CERTS, { recursive: true });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const certStatus = await certs([
    "--out",
    CERTS,
    "--ca-dir",
    CA_DIR,
    "--client",
    "connector-dev",
    "--client",
    "agent-dev",
  ]);
  if (certStatus !== 0) Deno.exit(certStatus);

  const children: Deno.ChildProcess[] = [];
  const stopAll = async (signal: Deno.Signal) => {
    for (const child of children.reverse()) {
      try {
        child.kill(signal);
      } catch {
        // Already gone.
      }
      await child.status;
    }
  };
  let stopping = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      if (stopping) Deno.exit(1);
      stopping = true;
      stopAll("SIGTERM").then(() => Deno.exit(0));
    });
  }

  try {
    const echo = await start("echo service", [
      "run",
      "--no-prompt",
      `--config=${join(PROJECT_ROOT, "deno.json")}`,
      "--allow-net=127.0.0.1",
      join(PROJECT_ROOT, "tools", "echo_service.ts"),
      "127.0.0.1:0",
    ], "echo service ready");
    children.push(echo.child);

    const relayConfig = await writeConfig("relay", {
      listen: "127.0.0.1:0",
      metrics: "127.0.0.1:0",
      tls: tls("relay"),
      services: { [SERVICE]: { connectors: ["connector-dev"], agents: ["agent-dev"] } },
    });
    const relay = await startComponent("relay", relayConfig);
    children.push(relay.child);

    const connectorConfig = await writeConfig("connector", {
      relays: [relay.ready.quic],
      metrics: "127.0.0.1:0",
      tls: tls("connector-dev"),
      services: { [SERVICE]: [`udp://${echo.ready.udp}`, `tcp://${echo.ready.tcp}`] },
    });
    const connector = await startComponent("connector", connectorConfig);
    children.push(connector.child);

    const udpPort = freePort("udp");
    const tcpPort = freePort("tcp");
    const agentConfig = await writeConfig("agent", {
      relays: [relay.ready.quic],
      tls: tls("agent-dev"),
      forwards: [
        { listen: `udp://127.0.0.1:${udpPort}`, service: SERVICE },
        { listen: `tcp://127.0.0.1:${tcpPort}`, service: SERVICE },
      ],
    });
    const rel = (path: string) => path.slice(PROJECT_ROOT.length + 1);
    console.error(
      [
        "",
        "ztna-edge dev is up (Ctrl-C to stop):",
        `  relay      quic ${relay.ready.quic}, metrics http://${relay.ready.metrics}/metrics`,
        `  connector  serving "${SERVICE}" -> udp://${echo.ready.udp} and tcp://${echo.ready.tcp}, metrics http://${connector.ready.metrics}/metrics`,
        "",
        "In another terminal, start an agent:",
        `  npx -y deno@2.9.6 task agent --config ${rel(agentConfig)}`,
        "then talk to the echo service through it, over UDP and over TCP:",
        `  npx -y deno@2.9.6 task probe udp://127.0.0.1:${udpPort} "hello"`,
        `  npx -y deno@2.9.6 task probe tcp://127.0.0.1:${tcpPort} "hello"`,
        "",
      ].join("\n"),
    );
    await Promise.all(children.map((c) => c.status));
  } catch (error) {
    console.error(`ztna dev: ${(error as Error).message}`);
    await stopAll("SIGTERM");
    Deno.exit(1);
  }
}
