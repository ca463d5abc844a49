import assert from "node:assert/strict";
import { connectorConfigSchema } from "../shared/config/mod.ts";
import { permissionFlags, runArgs } from "./permissions.ts";

const eth0 = { family: "IPv4", name: "eth0", address: "10.0.0.2", cidr: "10.0.0.2/24" } as const;
const raw = {
  relays: ["203.0.113.7:4433"],
  metrics: "127.0.0.1:9091",
  tls: { cert: "c.pem", key: "c.key", ca: "ca.pem" },
  services: {
    echo: "udp://localhost:17107",
    db: "tcp://db.internal:5432",
    dns: "udp://10.0.0.53:53",
  },
};
const config = connectorConfigSchema.parse(raw);
const resolved = new Map([["localhost", ["127.0.0.1"]], ["db.internal", ["10.0.0.5"]]]);

/** The `--allow-net` entries of a flag list. */
const netEntries = (flags: string[]) =>
  flags.find((f) => f.startsWith("--allow-net="))!.slice("--allow-net=".length).split(",");

Deno.test("permissions: connector backends are granted host:port only, never a bare host", () => {
  const net = netEntries(permissionFlags("connector", config, null, resolved, () => [eth0]));
  for (const entry of net) assert.match(entry, /:\d+$/, `${entry} names a port`);
  for (const host of ["localhost", "db.internal", "127.0.0.1", "10.0.0.5", "10.0.0.53"]) {
    assert.ok(!net.includes(host), `no bare ${host}`);
  }
  // Names as written (checked by the connector) and the addresses it sends to.
  for (const entry of ["localhost:17107", "127.0.0.1:17107", "db.internal:5432", "10.0.0.5:5432"]) {
    assert.ok(net.includes(entry), entry);
  }
  // Backend sockets bind the address routed to each backend; only the relay's is a wildcard.
  assert.ok(net.includes("127.0.0.1:0") && net.includes("10.0.0.2:0"));
  assert.deepEqual(net.filter((e) => e === "0.0.0.0:0"), ["0.0.0.0:0"]);
});

Deno.test("permissions: the connector is told the addresses resolved at launch", () => {
  const args = runArgs("connector", config, "/etc/ztna/connector.json", [], resolved);
  const hosts = args.find((a) => a.startsWith("--hosts="));
  assert.deepEqual(JSON.parse(hosts!.slice("--hosts=".length)), {
    localhost: ["127.0.0.1"],
    "db.internal": ["10.0.0.5"],
  });
  assert.ok(args.includes("--allow-sys=networkInterfaces"));
  // Nothing to tell when every backend is an IP literal.
  const literal = connectorConfigSchema.parse({
    ...raw,
    services: { dns: "udp://10.0.0.53:53" },
  });
  assert.ok(
    !runArgs("connector", literal, null, [], resolved).some((a) => a.startsWith("--hosts")),
  );
});

Deno.test("permissions: an audit file is the only write grant, with its rotated files", () => {
  const none = permissionFlags("connector", config, null, resolved, () => [eth0]);
  assert.ok(!none.some((f) => f.startsWith("--allow-write")), "no audit file, no write grant");
  const withAudit = connectorConfigSchema.parse({
    ...raw,
    audit: { destination: "file", file: "/var/log/ztna/audit.jsonl", keep: 2 },
  });
  const flags = permissionFlags("connector", withAudit, null, resolved, () => [eth0]);
  const files = "/var/log/ztna/audit.jsonl,/var/log/ztna/audit.jsonl.1,/var/log/ztna/audit.jsonl.2";
  assert.ok(flags.includes(`--allow-write=${files}`), flags.join(" "));
  // A rotation renames, which Deno checks for read access too: the same files, no folder.
  const read = flags.find((f) => f.startsWith("--allow-read="))!;
  for (const file of files.split(",")) assert.ok(read.split(/[=,]/).includes(file), file);
  assert.ok(!read.split(/[=,]/).includes("/var/log/ztna"));
});
