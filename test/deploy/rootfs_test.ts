/**
 * What the container image runs, tested without a Docker engine: a root filesystem holding only
 * what `gcr.io/distroless/cc-debian12:nonroot` holds (glibc and the other libraries the binaries
 * link, ca-certificates, `/etc/passwd` with `nonroot` = 65532, a world-writable `/tmp`, no shell)
 * plus our files, and the relay started in it as uid 65532 through `unshare --root` (chroot, new
 * mount and PID namespaces, `/proc` mounted): no shell anywhere on the way.
 *
 * `deno compile` cannot run here (its `denort` runtime is not downloadable, see PLATFORM.md), so
 * the image's compiled binary is stood in for by the same entrypoint under
 * `deno run --cached-only` with the deno binary, the sources and `node_modules` copied in. The
 * release workflow builds and runs the real image.
 *
 * Asserts: the relay logs `"msg":"ready"`, `/readyz` answers 200, `/metrics` carries every relay
 * metric the Grafana dashboard and the alert rules use (the live-scrape check), the process runs as
 * uid 65532, and SIGTERM ends it with exit 0.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { EXPORTED_METRICS, referencedMetrics } from "./metrics.ts";
import { requireCapabilities, requireTools } from "../../tools/host_tools.ts";
import { repoPath, run } from "./util.ts";
import { parse } from "yaml";

const NONROOT = 65532;

/** Copies a file to the same path under `root`, creating folders. */
async function place(root: string, path: string, mode?: number): Promise<void> {
  const target = join(root, path);
  await Deno.mkdir(dirname(target), { recursive: true });
  await Deno.copyFile(path, target);
  if (mode !== undefined) await Deno.chmod(target, mode);
}

/** The shared libraries a binary loads, as absolute paths (from `ldd`). */
async function sharedLibraries(binary: string): Promise<string[]> {
  const result = await run("ldd", [binary]);
  assert.equal(result.code, 0, `ldd ${binary}: ${result.stderr}`);
  return [...result.stdout.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1]);
}

/** Builds the distroless-like root filesystem with the app under /app. */
async function buildRootfs(root: string, addon: string): Promise<void> {
  await Deno.chmod(root, 0o755);
  // The libraries distroless/cc ships that our binaries need (glibc, libgcc_s, libm, ...).
  const libraries = new Set<string>();
  for (const binary of [Deno.execPath(), addon]) {
    for (const lib of await sharedLibraries(binary)) libraries.add(lib);
  }
  for (const lib of libraries) {
    await place(root, lib);
    const real = await Deno.realPath(lib);
    if (real !== lib) await place(root, real);
  }
  await place(root, "/etc/ssl/certs/ca-certificates.crt");
  await Deno.mkdir(join(root, "etc"), { recursive: true });
  await Deno.writeTextFile(
    join(root, "etc/passwd"),
    "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
      `nonroot:x:${NONROOT}:${NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n`,
  );
  await Deno.writeTextFile(
    join(root, "etc/group"),
    `root:x:0:\nnobody:x:65534:\nnonroot:x:${NONROOT}:\n`,
  );
  await Deno.writeTextFile(
    join(root, "etc/nsswitch.conf"),
    "passwd: files\ngroup: files\nhosts: files dns\n",
  );
  for (const dir of ["proc", "home/nonroot", "tmp"]) {
    await Deno.mkdir(join(root, dir), { recursive: true });
  }
  await Deno.chmod(join(root, "tmp"), 0o1777);
  await Deno.chown(join(root, "home/nonroot"), NONROOT, NONROOT);

  // The runtime and our files, read-only for the process (owned by root).
  await Deno.mkdir(join(root, "usr/local/bin"), { recursive: true });
  await Deno.copyFile(Deno.execPath(), join(root, "usr/local/bin/deno"));
  await Deno.chmod(join(root, "usr/local/bin/deno"), 0o755);
  await Deno.mkdir(join(root, "app"), { recursive: true });
  const ours = ["deno.json", "deno.lock", "relay", "shared", "node_modules"];
  const copy = await run("cp", ["-a", ...ours, join(root, "app") + "/"]);
  assert.equal(copy.code, 0, `copying the app: ${copy.stderr}`);
  // npm tarballs may carry 0640 files; the image's files are root-owned and world-readable.
  const chmod = await run("chmod", ["-R", "a+rX,go-w", join(root, "app")]);
  assert.equal(chmod.code, 0, chmod.stderr);

  // Certificates (dev CA) and the config, readable by uid 65532 as a mounted Secret would be.
  const tls = join(root, "etc/ztna/tls");
  await Deno.mkdir(tls, { recursive: true });
  // The CA key stays out of the image, as in production: its folder is outside the root.
  const caDir = `${root}-ca`;
  const certs = await run(Deno.execPath(), [
    "run",
    `--allow-read=${tls},${caDir}`,
    `--allow-write=${tls},${caDir}`,
    "tools/certs.ts",
    "--out",
    tls,
    "--ca-dir",
    caDir,
    "--client",
    "c1",
  ]);
  assert.equal(certs.code, 0, `tools/certs.ts: ${certs.stderr}`);
  for (const entry of Deno.readDirSync(tls)) {
    await Deno.chown(join(tls, entry.name), NONROOT, NONROOT);
  }
  await Deno.writeTextFile(
    join(root, "etc/ztna/relay.json"),
    JSON.stringify({
      listen: "127.0.0.1:0",
      metrics: "127.0.0.1:0",
      tls: {
        cert: "/etc/ztna/tls/relay.pem",
        key: "/etc/ztna/tls/relay.key",
        ca: "/etc/ztna/tls/ca.pem",
      },
      services: {},
    }),
  );
}

/** The relay metrics the dashboard and the rules reference. */
async function relayMetricsInUse(): Promise<string[]> {
  const exprs: string[] = [];
  const dashboard = JSON.parse(await Deno.readTextFile(repoPath("deploy/grafana/ztna-edge.json")));
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) exprs.push(target.expr);
  }
  const rules = parse(await Deno.readTextFile(repoPath("deploy/prometheus/alerts.yml")));
  for (const group of rules.groups) for (const rule of group.rules) exprs.push(rule.expr);
  const names = new Set(exprs.flatMap(referencedMetrics));
  return [...EXPORTED_METRICS.relay, ...EXPORTED_METRICS.common].filter((n) => names.has(n));
}

/** The process ids below `pid` (children, grandchildren, ...). */
function descendants(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim();
      for (const child of text.split(/\s+/).filter(Boolean).map(Number)) {
        out.push(child, ...descendants(child));
      }
    }
  } catch {
    // the process is gone
  }
  return out;
}

Deno.test({
  name:
    "deploy/rootfs: the relay reaches ready as uid 65532 in a distroless-like root without a shell",
  sanitizeResources: false,
  fn: async () => {
    // Never skipped: a host without these fails here with what to provide, and
    // `deno task test`'s setup step stops before the tests on the same list.
    requireTools(["unshare", "ldd"]);
    requireCapabilities(["linux", "root", "namespaces"]);
    const root = await Deno.makeTempDir({ prefix: "ztna-rootfs-" });
    let child: Deno.ChildProcess | undefined;
    try {
      const store = repoPath("node_modules/.deno");
      const addonPackage = [...Deno.readDirSync(store)].find((e) =>
        /^@matrixai\+quic-linux-/.test(e.name)
      );
      assert.ok(addonPackage, "the quiche addon package is installed");
      const addonDir = join("node_modules/.deno", addonPackage.name);
      const addonFile = [...Deno.readDirSync(repoPath(addonDir, "node_modules/@matrixai"))]
        .map((e) => join(addonDir, "node_modules/@matrixai", e.name))
        .flatMap((dir) => [...Deno.readDirSync(repoPath(dir))].map((e) => join(dir, e.name)))
        .find((path) => path.endsWith(".node"));
      assert.ok(addonFile, "the quiche .node file exists");
      await buildRootfs(root, repoPath(addonFile));
      // No shell in the root: what the image does not have, the process cannot use.
      for (const shell of ["bin/sh", "bin/bash", "usr/bin/sh"]) {
        await assert.rejects(Deno.stat(join(root, shell)), `${shell} must not exist`);
      }

      child = new Deno.Command("unshare", {
        args: [
          "--mount",
          "--pid",
          "--fork",
          "--mount-proc=/proc",
          `--root=${root}`,
          `--setuid=${NONROOT}`,
          `--setgid=${NONROOT}`,
          "--wd=/app",
          "/usr/local/bin/deno",
          "run",
          "--cached-only",
          "--frozen",
          "--no-prompt",
          "--unstable-net",
          "--allow-net",
          "--allow-env",
          "--allow-read=/etc/ztna,/app",
          `--allow-ffi=/app/${addonDir}`,
          "/app/relay/main.ts",
          "--config",
          "/etc/ztna/relay.json",
        ],
        env: { DENO_DIR: "/tmp/deno", HOME: "/home/nonroot", NO_COLOR: "1" },
        clearEnv: true,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const stderrText = new Response(child.stderr).text();
      const lines: string[] = [];
      let onReady: (record: Record<string, unknown>) => void = () => {};
      const readyLine = new Promise<Record<string, unknown>>((resolve) => onReady = resolve);
      const drain = (async () => {
        let buffer = "";
        for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
          buffer += chunk;
          let newline;
          while ((newline = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, newline);
            buffer = buffer.slice(newline + 1);
            lines.push(line);
            if (JSON.parse(line).msg === "ready") onReady(JSON.parse(line));
          }
        }
      })();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const ready = await Promise.race([
        readyLine,
        child.status.then(() => undefined),
        new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), 60_000)),
      ]);
      clearTimeout(timer);
      if (!ready) {
        for (const pid of descendants(child.pid)) Deno.kill(pid, "SIGKILL");
        await child.status;
        assert.fail(`no ready line; stdout:\n${lines.join("\n")}\nstderr:\n${await stderrText}`);
      }
      const metrics = String(ready.metrics);
      assert.match(metrics, /^127\.0\.0\.1:\d+$/);

      const readyz = await fetch(`http://${metrics}/readyz`);
      await readyz.body?.cancel();
      assert.equal(readyz.status, 200, "/readyz answers 200");

      const scrape = await (await fetch(`http://${metrics}/metrics`)).text();
      const exported = new Set([...scrape.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
      const missing = (await relayMetricsInUse()).filter((name) => !exported.has(name));
      assert.deepEqual(missing, [], "relay metrics used by the dashboard/rules but not exported");

      const pids = descendants(child.pid);
      const uids = pids.map((pid) =>
        Deno.readTextFileSync(`/proc/${pid}/status`).match(/^Uid:\s+(\d+)/m)?.[1]
      );
      assert.ok(pids.length > 0 && uids.every((uid) => uid === String(NONROOT)), `uids ${uids}`);

      for (const pid of pids) Deno.kill(pid, "SIGTERM");
      // Drain (3 s) within the shutdown bound (10 s); a hang past that is a failure.
      const killer = setTimeout(() => {
        for (const pid of descendants(child!.pid)) Deno.kill(pid, "SIGKILL");
      }, 15_000);
      const status = await child.status;
      clearTimeout(killer);
      await drain;
      assert.equal(status.code, 0, `exit code after SIGTERM; stderr:\n${await stderrText}`);
      child = undefined;
    } finally {
      if (child) {
        for (const pid of descendants(child.pid)) Deno.kill(pid, "SIGKILL");
        await child.status;
      }
      await Deno.remove(root, { recursive: true });
      await Deno.remove(`${root}-ca`, { recursive: true }).catch(() => {});
    }
  },
});
