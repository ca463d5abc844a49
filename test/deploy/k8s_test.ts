/**
 * Checks `deploy/k8s/`: every manifest parses (npm `yaml`), the base holds the objects the
 * deployment needs with the security, probe, scaling and scheduling properties it relies on, the
 * ConfigMap configs pass the components' own config schemas, and every overlay's patches apply.
 * When `kubectl` is installed, the overlays are also rendered by `kubectl kustomize` and the
 * rendered output is checked the same way.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { parseAllDocuments } from "yaml";
import { connectorConfigSchema, relayConfigSchema } from "../../shared/config/mod.ts";
import { requireTools } from "../../tools/host_tools.ts";
import { listFiles, repoPath, run } from "./util.ts";

// deno-lint-ignore no-explicit-any
type Manifest = any;

const BASE = repoPath("deploy/k8s/base");
const OVERLAYS = ["staging", "production"];

/** Parses every YAML document of a file; fails on any YAML error. */
export function parseManifests(text: string, name: string): Manifest[] {
  const docs = parseAllDocuments(text);
  const out: Manifest[] = [];
  for (const doc of docs) {
    assert.deepEqual(doc.errors.map((e) => e.message), [], `${name}: YAML errors`);
    const value = doc.toJS();
    if (value !== null) out.push(value);
  }
  return out;
}

/** The base's manifests: its `resources`, in order. */
async function baseManifests(): Promise<Manifest[]> {
  const kustomization = parseManifests(
    await Deno.readTextFile(join(BASE, "kustomization.yaml")),
    "kustomization.yaml",
  )[0];
  const out: Manifest[] = [];
  for (const file of kustomization.resources as string[]) {
    out.push(...parseManifests(await Deno.readTextFile(join(BASE, file)), file));
  }
  return out;
}

function find(manifests: Manifest[], kind: string, name: string): Manifest {
  const found = manifests.find((m) => m.kind === kind && m.metadata?.name === name);
  assert.ok(found, `${kind}/${name} exists`);
  return found;
}

/** Asserts the properties one workload must have; `metricsPort` is its metrics listener port. */
export function assertWorkload(deployment: Manifest, metricsPort: number): void {
  const name = deployment.metadata.name;
  const pod = deployment.spec.template.spec;
  assert.ok(pod.terminationGracePeriodSeconds > 10, `${name}: grace period above the 10 s bound`);
  assert.equal(pod.automountServiceAccountToken, false, `${name}: no service account token`);
  const podSec = pod.securityContext;
  assert.equal(podSec.runAsNonRoot, true, `${name}: runAsNonRoot`);
  assert.equal(podSec.runAsUser, 65532, `${name}: uid 65532 (distroless nonroot)`);
  assert.equal(podSec.seccompProfile?.type, "RuntimeDefault", `${name}: seccomp RuntimeDefault`);
  const spread = pod.topologySpreadConstraints ?? [];
  assert.ok(
    spread.some((c: Manifest) => c.topologyKey === "topology.kubernetes.io/zone"),
    `${name}: spread across zones`,
  );
  assert.ok(
    spread.every((c: Manifest) =>
      JSON.stringify(c.labelSelector.matchLabels) ===
        JSON.stringify(deployment.spec.selector.matchLabels)
    ),
    `${name}: topology spread selects its own pods`,
  );
  const [container] = pod.containers;
  const sec = container.securityContext;
  assert.equal(sec.allowPrivilegeEscalation, false, `${name}: no privilege escalation`);
  assert.equal(sec.readOnlyRootFilesystem, true, `${name}: read-only root filesystem`);
  assert.deepEqual(sec.capabilities?.drop, ["ALL"], `${name}: drops ALL capabilities`);
  assert.ok(!sec.capabilities?.add?.length, `${name}: adds no capabilities`);
  assert.ok(container.resources?.requests?.cpu, `${name}: cpu request`);
  assert.ok(container.resources?.requests?.memory, `${name}: memory request`);
  assert.ok(container.resources?.limits?.memory, `${name}: memory limit`);
  for (const arg of [...(container.command ?? []), ...(container.args ?? [])]) {
    assert.ok(arg !== "-A" && arg !== "--allow-all", `${name}: never -A`);
  }

  // Probes hit the metrics listener: the named port must be the metrics port.
  const ports = new Map<string, number>(
    container.ports.map((p: Manifest) => [p.name, p.containerPort]),
  );
  const probePort = (probe: Manifest) =>
    typeof probe.httpGet.port === "number" ? probe.httpGet.port : ports.get(probe.httpGet.port);
  assert.equal(container.livenessProbe?.httpGet?.path, "/livez", `${name}: liveness path`);
  assert.equal(container.readinessProbe?.httpGet?.path, "/readyz", `${name}: readiness path`);
  for (const probe of ["livenessProbe", "readinessProbe", "startupProbe"]) {
    if (container[probe]) {
      assert.equal(probePort(container[probe]), metricsPort, `${name}: ${probe} port`);
    }
  }

  // Secrets are mounted as files, never passed in the environment.
  for (const env of container.env ?? []) {
    assert.ok(!env.valueFrom?.secretKeyRef, `${name}: secret ${env.name} in the environment`);
  }
  assert.ok(!container.envFrom?.some((e: Manifest) => e.secretRef), `${name}: envFrom a secret`);
  const secretVolumes = pod.volumes.filter((v: Manifest) => v.secret).map((v: Manifest) => v.name);
  assert.ok(secretVolumes.length > 0, `${name}: a secret volume`);
  for (const volume of secretVolumes) {
    const mount = container.volumeMounts.find((m: Manifest) => m.name === volume);
    assert.ok(mount?.readOnly, `${name}: secret ${volume} mounted read-only`);
  }
  // A writable /tmp for the compiled binary's addon extraction, since the root is read-only.
  const tmp = container.volumeMounts.find((m: Manifest) => m.mountPath === "/tmp");
  assert.ok(
    tmp && pod.volumes.find((v: Manifest) => v.name === tmp.name)?.emptyDir,
    `${name}: /tmp`,
  );
}

/** Asserts the whole set of objects: the workloads plus the relay's Service, HPA, PDB, policy. */
export function assertDeployment(manifests: Manifest[], configs: Map<string, string>): void {
  const relay = find(manifests, "Deployment", "ztna-relay");
  const relayConfig = relayConfigSchema.parse(JSON.parse(configs.get("relay.json")!));
  assert.equal(relayConfig.metrics?.host, "0.0.0.0", "relay metrics listen on all interfaces");
  assertWorkload(relay, relayConfig.metrics!.port);
  const connectorConfig = connectorConfigSchema.parse(JSON.parse(configs.get("connector.json")!));
  assertWorkload(find(manifests, "Deployment", "ztna-connector"), connectorConfig.metrics!.port);
  const shutdown = relayConfig.shutdown_timeout_ms / 1000;
  assert.ok(
    relay.spec.template.spec.terminationGracePeriodSeconds > shutdown,
    "grace period exceeds shutdown_timeout_ms",
  );

  const quicPort = relay.spec.template.spec.containers[0].ports.find((p: Manifest) =>
    p.name === "quic"
  );
  assert.deepEqual([quicPort.containerPort, quicPort.protocol], [relayConfig.listen.port, "UDP"]);

  const service = find(manifests, "Service", "ztna-relay");
  assert.equal(service.spec.type, "LoadBalancer");
  assert.deepEqual(
    service.spec.ports.map((p: Manifest) => [p.port, p.protocol]),
    [[4433, "UDP"]],
    "the public Service exposes UDP 4433 only (never metrics)",
  );
  assert.deepEqual(service.spec.selector, relay.spec.selector.matchLabels);

  const hpa = find(manifests, "HorizontalPodAutoscaler", "ztna-relay");
  assert.equal(hpa.apiVersion, "autoscaling/v2");
  assert.equal(hpa.spec.scaleTargetRef.name, "ztna-relay");
  assert.ok(hpa.spec.minReplicas >= 2, "HPA keeps at least two relays");
  assert.ok(hpa.spec.maxReplicas >= hpa.spec.minReplicas);

  const pdb = find(manifests, "PodDisruptionBudget", "ztna-relay");
  assert.deepEqual(pdb.spec.selector.matchLabels, relay.spec.selector.matchLabels);
  assert.ok(pdb.spec.maxUnavailable === 1 || pdb.spec.minAvailable >= 1, "PDB keeps relays up");

  const policy = find(manifests, "NetworkPolicy", "ztna-relay");
  assert.deepEqual(policy.spec.podSelector.matchLabels, relay.spec.selector.matchLabels);
  assert.deepEqual(policy.spec.policyTypes, ["Ingress", "Egress"]);
  for (const rule of policy.spec.ingress) {
    const metrics = rule.ports?.some((p: Manifest) => p.port === relayConfig.metrics!.port);
    if (metrics) assert.ok(rule.from?.length, "metrics ingress is restricted to named sources");
    for (const peer of rule.from ?? []) {
      assert.ok(!peer.ipBlock || !/^0\.0\.0\.0\/0$|^::\/0$/.test(peer.ipBlock.cidr));
    }
  }
  assert.ok(
    policy.spec.ingress.some((r: Manifest) =>
      r.ports?.some((p: Manifest) => p.port === 4433 && p.protocol === "UDP")
    ),
    "UDP 4433 ingress allowed",
  );

  const monitor = find(manifests, "ServiceMonitor", "ztna-edge");
  for (const job of ["ztna-relay", "ztna-connector"]) {
    const metricsService = manifests.find((m) =>
      m.kind === "Service" && m.metadata.labels?.[monitor.spec.jobLabel] === job
    );
    assert.ok(metricsService, `a metrics Service labelled job ${job}`);
    for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels)) {
      assert.equal(metricsService.metadata.labels[k], v, `ServiceMonitor selects ${job}`);
    }
    const port = metricsService.spec.ports.find((p: Manifest) =>
      monitor.spec.endpoints.some((e: Manifest) => e.port === p.name)
    );
    assert.ok(port, `${job}: the ServiceMonitor endpoint port exists`);
    assert.equal(monitor.spec.endpoints[0].path, "/metrics");
  }
}

/** Applies an RFC 6902 patch of `replace`/`add` operations; a missing target path is an error. */
export function applyJsonPatch(target: Manifest, ops: Manifest[]): void {
  for (const op of ops) {
    assert.ok(op.op === "replace" || op.op === "add", `unsupported patch op ${op.op}`);
    const parts = (op.path as string).split("/").slice(1).map((p) =>
      p.replaceAll("~1", "/").replaceAll("~0", "~")
    );
    let node = target;
    for (const part of parts.slice(0, -1)) {
      assert.ok(node !== undefined && part in node, `patch path ${op.path} does not exist`);
      node = node[part];
    }
    const last = parts.at(-1)!;
    if (op.op === "replace") assert.ok(last in node, `patch path ${op.path} does not exist`);
    node[last] = op.value;
  }
}

async function baseConfigs(): Promise<Map<string, string>> {
  return new Map([
    ["relay.json", await Deno.readTextFile(join(BASE, "relay.json"))],
    ["connector.json", await Deno.readTextFile(join(BASE, "connector.json"))],
  ]);
}

Deno.test("deploy/k8s: every manifest parses as YAML", async () => {
  const files = listFiles(repoPath("deploy/k8s"), [".yaml", ".yml"]);
  assert.ok(files.length >= 10);
  for (const file of files) parseManifests(await Deno.readTextFile(file), file);
});

Deno.test("deploy/k8s: the base has the objects and properties the deployment relies on", async () => {
  assertDeployment(await baseManifests(), await baseConfigs());
});

Deno.test("deploy/k8s: the checks fail on a weakened manifest", async () => {
  const configs = await baseConfigs();
  const breakers: [string, (m: Manifest[]) => void, RegExp][] = [
    ["probe on the QUIC port", (m) => {
      find(m, "Deployment", "ztna-relay").spec.template.spec.containers[0].readinessProbe.httpGet
        .port = "quic";
    }, /readinessProbe port/],
    ["writable root", (m) => {
      find(m, "Deployment", "ztna-connector").spec.template.spec.containers[0].securityContext
        .readOnlyRootFilesystem = false;
    }, /read-only root/],
    ["metrics open to the world", (m) => {
      find(m, "NetworkPolicy", "ztna-relay").spec.ingress[1].from = [];
    }, /restricted/],
    ["short grace period", (m) => {
      find(m, "Deployment", "ztna-relay").spec.template.spec.terminationGracePeriodSeconds = 5;
    }, /grace period/],
  ];
  for (const [what, breakIt, message] of breakers) {
    const manifests = await baseManifests();
    breakIt(manifests);
    assert.throws(() => assertDeployment(manifests, configs), message, what);
  }
});

Deno.test("deploy/k8s: every overlay's patches apply to the base and keep its properties", async () => {
  for (const overlay of OVERLAYS) {
    const dir = repoPath("deploy/k8s/overlays", overlay);
    const kustomization = parseManifests(
      await Deno.readTextFile(join(dir, "kustomization.yaml")),
      `${overlay}/kustomization.yaml`,
    )[0];
    assert.deepEqual(kustomization.resources, ["../../base"], `${overlay}: builds on the base`);
    assert.equal(typeof kustomization.namespace, "string", `${overlay}: sets a namespace`);
    assert.equal(kustomization.namePrefix, undefined, `${overlay}: names (and job labels) kept`);
    const manifests = await baseManifests();
    for (const patch of kustomization.patches ?? []) {
      const target = find(manifests, patch.target.kind, patch.target.name);
      applyJsonPatch(target, parseManifests(patch.patch, `${overlay} patch`)[0]);
    }
    assertDeployment(manifests, await baseConfigs());
  }
});

Deno.test({
  name: "deploy/k8s: kubectl kustomize renders every overlay with the same properties",
  fn: async () => {
    requireTools(["kubectl"]);
    for (const overlay of OVERLAYS) {
      const dir = repoPath("deploy/k8s/overlays", overlay);
      const result = await run("kubectl", ["kustomize", dir]);
      assert.equal(result.code, 0, result.stderr);
      const manifests = parseManifests(result.stdout, `${overlay} (rendered)`);
      const configs = new Map<string, string>();
      for (const map of manifests.filter((m) => m.kind === "ConfigMap")) {
        for (const [key, value] of Object.entries(map.data)) configs.set(key, value as string);
      }
      assertDeployment(manifests, configs);
      // Generated ConfigMap names carry a content hash; the Deployments must refer to them.
      for (const deployment of manifests.filter((m) => m.kind === "Deployment")) {
        for (const volume of deployment.spec.template.spec.volumes) {
          if (!volume.configMap) continue;
          assert.ok(
            manifests.some((m) =>
              m.kind === "ConfigMap" && m.metadata.name === volume.configMap.name
            ),
            `${overlay}: ConfigMap ${volume.configMap.name} is rendered`,
          );
        }
      }
      assert.ok(
        manifests.every((m) => m.kind === "Namespace" || m.metadata.namespace),
        dirname(dir),
      );
    }
  },
});
