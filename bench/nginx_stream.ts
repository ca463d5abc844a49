/**
 * The plain-proxy peer: nginx's `stream` module proxying one loopback port (UDP or TCP) to a
 * backend, one worker process, no encryption. The process is always stopped by `stop()`.
 *
 * @module
 */
import { join } from "node:path";
import { freePort, runPeer, sleep, startPeer } from "./bench_util.ts";

/** nginx `stream` proxy (one worker) of `transport` in front of `backendPort`. */
export async function startNginxStream(
  transport: "udp" | "tcp",
  backendPort: number,
): Promise<{ port: number; stop(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "ztna-bench-nginx-" });
  const port = freePort(transport);
  const conf = `
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} warn;
events { worker_connections 4096; }
stream {
  server {
    listen 127.0.0.1:${port}${transport === "udp" ? " udp" : ""};
    proxy_pass 127.0.0.1:${backendPort};
    proxy_timeout 30s;
  }
}
`;
  await Deno.writeTextFile(join(dir, "nginx.conf"), conf);
  await runPeer("nginx", ["-t", "-q", "-p", dir, "-c", join(dir, "nginx.conf")]);
  const proc = startPeer("nginx", ["-p", dir, "-c", join(dir, "nginx.conf")]);
  await sleep(300);
  return {
    port,
    async stop() {
      await proc.kill();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
