import assert from "node:assert/strict";
import { join } from "node:path";
import { startTcpTunnel } from "../_support/tcp_util.ts";
import { freePort } from "../_support/ports.ts";

/** The newest PostgreSQL server binaries installed from Debian's packages, if any. */
function postgresBin(): string | null {
  try {
    const versions = [...Deno.readDirSync("/usr/lib/postgresql")].map((e) => e.name).sort();
    const bin = `/usr/lib/postgresql/${versions.at(-1)}/bin`;
    Deno.statSync(join(bin, "initdb"));
    return bin;
  } catch {
    return null;
  }
}

const bin = postgresBin();
const decoder = new TextDecoder();

/** Runs a PostgreSQL tool, as the postgres user when we are root (initdb refuses root). */
async function run(command: string, args: string[]): Promise<string> {
  const asRoot = Deno.uid() === 0;
  const output = await new Deno.Command(asRoot ? "runuser" : command, {
    args: asRoot ? ["-u", "postgres", "--", command, ...args] : args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = decoder.decode(output.stdout) + decoder.decode(output.stderr);
  if (!output.success) throw new Error(`${command} failed: ${text}`);
  return text;
}

Deno.test({
  name: "tcp tunnel: psql talks to PostgreSQL through the agent",
  async fn() {
    if (bin === null) {
      throw new Error("no PostgreSQL server under /usr/lib/postgresql: apt-get install postgresql");
    }
    const dir = await Deno.makeTempDir({ prefix: "ztna-pg-" });
    if (Deno.uid() === 0) {
      const uid = Number(
        decoder.decode(
          (await new Deno.Command("id", { args: ["-u", "postgres"] }).output()).stdout,
        ),
      );
      await Deno.chown(dir, uid, null);
    }
    const port = freePort();
    const data = join(dir, "data");
    await run(join(bin!, "initdb"), ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]);
    await run(join(bin!, "pg_ctl"), [
      "-D",
      data,
      "-l",
      join(dir, "log"),
      "-w",
      "-t",
      "30",
      "-o",
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
      "start",
    ]);
    const tunnel = await startTcpTunnel({ backends: { pg: port } }).catch(async (error) => {
      await run(join(bin!, "pg_ctl"), ["-D", data, "-m", "immediate", "stop"]);
      throw error;
    });
    try {
      // One session, several round trips: DDL, a bulk insert, a query, a server-side error.
      const psql = new Deno.Command("psql", {
        args: [
          "-h",
          "127.0.0.1",
          "-p",
          String(tunnel.ports.pg),
          "-U",
          "postgres",
          "-X",
          "-A",
          "-t",
        ],
        env: { PGCONNECT_TIMEOUT: "10" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const writer = psql.stdin.getWriter();
      await writer.write(new TextEncoder().encode([
        "create table t (x int);",
        "insert into t select generate_series(1, 100000);",
        "select sum(x) from t;",
        "select repeat('z', 200000) = repeat('z', 200000);",
        "select 1/0;",
        "select 'still here';",
        "\\q",
        "",
      ].join("\n")));
      await writer.close();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const output = await Promise.race([
        psql.output(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            psql.kill("SIGKILL");
            reject(new Error("psql did not finish within 30 s"));
          }, 30_000);
        }),
      ]);
      clearTimeout(timer);
      const stdout = decoder.decode(output.stdout);
      const stderr = decoder.decode(output.stderr);
      assert.match(stdout, /^5000050000$/m, stderr);
      assert.match(stdout, /^t$/m);
      assert.match(stderr, /division by zero/);
      assert.match(stdout, /^still here$/m);
    } finally {
      await tunnel.stop();
      await run(join(bin!, "pg_ctl"), ["-D", data, "-m", "immediate", "stop"]).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
