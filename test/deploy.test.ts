import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { ISecret } from 'kubernetes-models/v1/Secret';
import type { IService } from 'kubernetes-models/v1/Service';
import type { IServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';

import { decryptPasswords, validateConfig } from '../src/config/load.js';
import { apiTokenSha256 } from '../src/server/api-tokens.js';
import { startTestGateway } from './helpers/gateway.js';

// What can be checked of deploy/ without a cluster or a container engine, in
// seconds: the manifests against Kubernetes' schemas and the gateway's own
// configuration rules, the probes against a running gateway, the
// Dockerfile's stages. The image's build itself is checked by
// deploy/check-dockerfile.sh (minutes; not part of the suite).

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const MANIFESTS = join(ROOT, 'deploy/kubernetes');
const NAMESPACE = 'virt-graph';

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

interface Manifest {
  file: string;
  object: KubeObject;
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) =>
      e.isDirectory() ? yamlFiles(join(dir, e.name)) : /\.ya?ml$/.test(e.name) ? [join(dir, e.name)] : [],
    )
    .sort();
}

/** Every object of every file, read as Kubernetes reads YAML (1.1: `0440` is octal). */
function parseManifests(text: string, file: string): Manifest[] {
  return parseAllDocuments(text, { version: '1.1' }).flatMap((doc) => {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const object = doc.toJS() as KubeObject | null;
    return object === null ? [] : [{ file, object }];
  });
}

const manifests: Manifest[] = yamlFiles(MANIFESTS).flatMap((f) =>
  parseManifests(readFileSync(f, 'utf8'), relative(ROOT, f)),
);

function one<T>(kind: string, name: string): T {
  const found = manifests.filter((m) => m.object.kind === kind && m.object.metadata.name === name);
  expect(found, `${kind}/${name}`).toHaveLength(1);
  return found[0]!.object as unknown as T;
}

const deployment = one<IDeployment>('Deployment', 'virt-graph');
const pod = deployment.spec!.template.spec!;
const gateway = pod.containers.find((c) => c.name === 'gateway')!;
const configMap = one<IConfigMap>('ConfigMap', 'virt-graph-config');
const secret = one<ISecret>('Secret', 'virt-graph-secrets');
const rawConfig = parseYaml(configMap.data!['config.yaml']!) as Record<string, unknown>;
const config = validateConfig(rawConfig, 'deploy/kubernetes/10-configmap.yaml');

/** The container's port for a probe's or Service's port, given by name or number. */
function containerPort(port: string | number | undefined): number | undefined {
  return typeof port === 'number' ? port : gateway.ports?.find((p) => p.name === port)?.containerPort;
}

/** The Dockerfile's stages: instructions with continuation lines joined and comments dropped. */
function dockerfileStages(): { from: string; name: string; instructions: { op: string; args: string }[] }[] {
  const stages: { from: string; name: string; instructions: { op: string; args: string }[] }[] = [];
  const args = new Map<string, string>();
  let pending = '';
  for (const raw of readFileSync(join(ROOT, 'Dockerfile'), 'utf8').split('\n')) {
    if (/^\s*#/.test(raw)) continue;
    pending += (pending ? ' ' : '') + raw.replace(/\\\s*$/, '').trim();
    if (/\\\s*$/.test(raw)) continue;
    const line = pending.trim();
    pending = '';
    const m = /^(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const op = m[1]!.toUpperCase();
    const rest = m[2]!;
    if (op === 'ARG' && stages.length === 0) {
      const [k, v = ''] = rest.split('=', 2);
      args.set(k!, v);
    } else if (op === 'FROM') {
      const [image = '', , name = String(stages.length)] = rest.split(/\s+/);
      stages.push({ from: image.replace(/\$\{(\w+)\}/g, (_, k: string) => args.get(k) ?? ''), name, instructions: [] });
    } else {
      stages.at(-1)!.instructions.push({ op, args: rest });
    }
  }
  return stages;
}

describe('deploy/kubernetes', () => {
  it('parses as YAML into objects that each name their kind, name and the namespace', () => {
    expect(manifests.map((m) => `${m.object.kind}/${m.object.metadata.name}`).sort()).toEqual(
      [
        'ConfigMap/virt-graph-config',
        'Deployment/redis',
        'Deployment/virt-graph',
        'Namespace/virt-graph',
        'NetworkPolicy/redis',
        'PodDisruptionBudget/virt-graph',
        'Secret/virt-graph-prometheus-token',
        'Secret/virt-graph-secrets',
        'Service/redis',
        'Service/virt-graph',
        'ServiceAccount/virt-graph',
        'ServiceMonitor/virt-graph',
      ].sort(),
    );
    for (const { file, object } of manifests) {
      if (object.kind !== 'Namespace') expect(object.metadata.namespace, file).toBe(NAMESPACE);
    }
  });

  it("passes Kubernetes' own schemas (and the Prometheus Operator's, for the ServiceMonitor)", async () => {
    const model = async (apiVersion: string, kind: string) => {
      const specifier = apiVersion.startsWith('monitoring.coreos.com/')
        ? `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`
        : `kubernetes-models/${apiVersion}/${kind}`;
      const mod = (await import(specifier)) as Record<string, new (data: unknown) => { validate(): void }>;
      return mod[kind]!;
    };
    for (const { file, object } of manifests) {
      const Model = await model(object.apiVersion, object.kind);
      expect(() => new Model(object).validate(), `${file}: ${object.kind}/${object.metadata.name}`).not.toThrow();
    }
    // The validator does refuse what the API server would.
    const Deployment = await model('apps/v1', 'Deployment');
    const broken = structuredClone(deployment) as unknown as { spec: { template: { spec: { containers: object[] } } } };
    broken.spec.template.spec.containers[0] = { ...gateway, ports: [{ containerPort: 'http' }] };
    expect(() => new Deployment(broken).validate()).toThrow(/containerPort must be integer/);
  });

  it('kubectl: kustomize renders deploy/ to the same objects; a client dry run where a cluster answers', async ({
    annotate,
  }) => {
    if (spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).error) {
      await annotate('kubectl is not installed: its checks were skipped (the schemas above still apply)');
      return;
    }
    const rendered = spawnSync('kubectl', ['kustomize', join(ROOT, 'deploy')], { encoding: 'utf8' });
    expect(rendered.stderr).toBe('');
    expect(rendered.status).toBe(0);
    const key = (o: KubeObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    expect(
      parseManifests(rendered.stdout, 'kubectl kustomize deploy/')
        .map((m) => key(m.object))
        .sort(),
    ).toEqual(
      manifests
        .filter((m) => !m.file.includes('/monitoring/'))
        .map((m) => key(m.object))
        .sort(),
    );

    // `kubectl apply --dry-run=client` asks the API server what the kinds are
    // (and for their schemas): it runs only where a cluster answers, and is
    // skipped where none does (no kubeconfig: localhost:8080 refuses at once).
    const dryRun = spawnSync('kubectl', ['apply', '--dry-run=client', '--request-timeout=10s', '-f', `${MANIFESTS}/`], {
      encoding: 'utf8',
    });
    const unreachable =
      /connection.*refused|couldn't get current server API group list|failed to download openapi|Unable to connect|no such host|dial tcp|i\/o timeout|deadline exceeded|Unauthorized|forbidden/i;
    if (dryRun.status !== 0 && unreachable.test(dryRun.stderr)) {
      await annotate(`kubectl apply --dry-run=client: skipped, no cluster answers (${dryRun.stderr.split('\n')[0]})`);
      return;
    }
    expect(dryRun.stderr).toBe('');
    expect(dryRun.stdout.match(/\(dry run\)/g)).toHaveLength(
      manifests.filter((m) => !m.file.includes('/monitoring/')).length,
    );
  }, 60_000);

  it("holds a configuration that passes the gateway's own validation, with passwords the Secret's key decrypts", () => {
    expect(config.platforms.map((p) => p.kind).sort()).toEqual(['libvirt', 'vsphere']);
    expect(config.server.readiness).toEqual({ requirePlatforms: 'any', requireRedis: false });
    expect(config.server.host).toBe('0.0.0.0');
    expect(config.auth.jwt?.issuer).toMatch(/^https:\/\//);
    expect(config.auth.anonymous).toBeUndefined();
    // Redis is the example's own Service.
    expect(new URL(config.redis!.url!).hostname).toBe(one<IService>('Service', 'redis').metadata!.name);
    const env = { ...secret.stringData };
    const decrypted = decryptPasswords(config, env);
    const vsphere = decrypted.platforms.find((p) => p.kind === 'vsphere')!;
    expect(vsphere.password).not.toMatch(/^enc:/);
    // The Prometheus token of its Secret is the one whose hash the configuration holds.
    const prometheus = one<ISecret>('Secret', 'virt-graph-prometheus-token').stringData!['token']!;
    expect(config.auth.apiTokens).toContainEqual({ name: 'prometheus', sha256: apiTokenSha256(prometheus) });
    // Every environment variable the Deployment takes from a Secret is in it.
    for (const e of gateway.env ?? []) {
      const ref = e.valueFrom?.secretKeyRef;
      if (ref && !ref.optional) expect(secret.stringData, e.name).toHaveProperty(ref.key);
    }
  });

  it("points its probes at the gateway's /readyz and /healthz on the ConfigMap's server.port, and Prometheus at /metrics", async () => {
    const probes = {
      readiness: gateway.readinessProbe?.httpGet,
      liveness: gateway.livenessProbe?.httpGet,
      startup: gateway.startupProbe?.httpGet,
    };
    expect(probes.readiness?.path).toBe('/readyz');
    expect(probes.liveness?.path).toBe('/healthz');
    expect(probes.startup?.path).toBe('/healthz');
    for (const probe of Object.values(probes)) expect(containerPort(probe?.port)).toBe(config.server.port);
    // The image's HOST is set, PORT is not: the file's server.port is the port.
    expect(gateway.env?.some((e) => e.name === 'PORT')).toBe(false);

    // A gateway with the ConfigMap's readiness policy, metrics and auth (its
    // JWT issuer aside, which is not there to ask) answers the probes, and
    // the ServiceMonitor's endpoint with the token of its Secret.
    const monitor = one<IServiceMonitor>('ServiceMonitor', 'virt-graph');
    const [endpoint] = monitor.spec.endpoints!;
    const credentials = endpoint!.authorization!.credentials!;
    const token = one<ISecret>('Secret', credentials.name!).stringData![credentials.key];
    const { jwt: _jwt, ...auth } = rawConfig['auth'] as Record<string, unknown>;
    const gw = await startTestGateway({
      server: { readiness: config.server.readiness },
      observability: rawConfig['observability'],
      auth,
      platforms: [{ id: 'libvirt-test', kind: 'libvirt', uri: 'test:///default' }],
    });
    try {
      for (const probe of Object.values(probes)) {
        const res = await fetch(new URL(probe!.path!, gw.url));
        expect(res.status, probe!.path).toBe(200);
      }
      const scrape = await fetch(new URL(endpoint!.path!, gw.url), {
        headers: { authorization: `${endpoint!.authorization!.type} ${token}` },
      });
      expect(scrape.status).toBe(200);
      expect(await scrape.text()).toMatch(/^# (HELP|TYPE) /m);
      expect((await fetch(new URL(endpoint!.path!, gw.url))).status).toBe(401);
    } finally {
      await gw.close();
    }
  });

  it('runs two non-root replicas with a read-only root, a writable state volume and a grace period for draining', () => {
    expect(deployment.spec!.replicas).toBe(2);
    expect(deployment.spec!.strategy?.rollingUpdate?.maxUnavailable).toBe(0);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001, fsGroup: 10001 });
    expect(gateway.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(gateway.resources?.requests).toBeDefined();
    expect(gateway.resources?.limits?.['memory']).toBeDefined();

    const volume = (mountPath: string) => {
      const mount = gateway.volumeMounts?.find(
        (m) => mountPath === m.mountPath || mountPath.startsWith(`${m.mountPath}/`),
      );
      return { mount, volume: pod.volumes?.find((v) => v.name === mount?.name) };
    };
    // The state directory (tasks, audit) and /tmp are writable volumes of the pod.
    for (const dir of [config.state.dir, '/tmp']) {
      const { mount, volume: v } = volume(dir);
      expect(v?.emptyDir, dir).toBeDefined();
      expect(mount?.readOnly, dir).toBeFalsy();
    }
    // The configuration file comes from the ConfigMap, where VIRT_GRAPH_CONFIG says.
    const configPath = gateway.env?.find((e) => e.name === 'VIRT_GRAPH_CONFIG')?.value;
    expect(configPath).toBe('/etc/virt-graph/config.yaml');
    const { mount: configMount, volume: configVolume } = volume(configPath!);
    expect(configMount?.readOnly).toBe(true);
    expect(configVolume?.configMap?.name).toBe(configMap.metadata!.name);
    expect(configPath!.slice(configMount!.mountPath.length + 1)).toBe('config.yaml');
    // The libvirt platform's pkipath is the mounted client certificate.
    const libvirt = config.platforms.find((p) => p.kind === 'libvirt')!;
    const pkipath = new URL(libvirt.uri).searchParams.get('pkipath')!;
    expect(volume(pkipath).volume?.secret?.secretName).toBe('virt-graph-libvirt-pki');

    // SIGTERM comes after the preStop sleep; then the gateway drains for up
    // to shutdownGraceMs and closes its connections. All of it must end
    // before the kubelet's SIGKILL, without holding a rollout much longer.
    const preStop = gateway.lifecycle?.preStop?.exec?.command;
    expect(preStop?.[0]).toBe('sleep');
    const needMs = Number(preStop![1]) * 1000 + config.server.shutdownGraceMs;
    const graceMs = pod.terminationGracePeriodSeconds! * 1000;
    expect(graceMs).toBeGreaterThanOrEqual(needMs + 3000);
    expect(graceMs).toBeLessThanOrEqual(needMs + 30_000);
  });

  it('selects the gateway pods from its Service, PodDisruptionBudget and ServiceMonitor', () => {
    const podLabels = deployment.spec!.template.metadata!.labels!;
    const matches = (selector: Record<string, string> | undefined) =>
      Object.entries(selector ?? {}).every(([k, v]) => podLabels[k] === v);
    const service = one<IService>('Service', 'virt-graph');
    expect(matches(service.spec!.selector)).toBe(true);
    expect(deployment.spec!.selector.matchLabels).toEqual(service.spec!.selector);
    const httpPort = service.spec!.ports!.find((p) => p.name === 'http')!;
    expect(containerPort(httpPort.targetPort)).toBe(config.server.port);

    const pdb = one<IPodDisruptionBudget>('PodDisruptionBudget', 'virt-graph');
    expect(matches(pdb.spec!.selector!.matchLabels)).toBe(true);
    expect(pdb.spec!.minAvailable).toBe(1);

    const monitor = one<IServiceMonitor>('ServiceMonitor', 'virt-graph');
    const serviceLabels = service.metadata!.labels!;
    expect(Object.entries(monitor.spec.selector.matchLabels ?? {}).every(([k, v]) => serviceLabels[k] === v)).toBe(
      true,
    );
    expect(monitor.spec.namespaceSelector?.matchNames).toEqual([NAMESPACE]);
    expect(monitor.spec.endpoints).toEqual([
      expect.objectContaining({
        port: 'http',
        path: '/metrics',
        authorization: { type: 'Bearer', credentials: { name: 'virt-graph-prometheus-token', key: 'token' } },
      }),
    ]);
    expect(config.observability.metrics.enabled).toBe(true);
  });
});

describe('Dockerfile', () => {
  const stages = dockerfileStages();
  const [build, runtime] = stages;

  it('builds in a stage that runs only deploy/build.sh (deploy/check-dockerfile.sh runs the same)', () => {
    expect(stages.map((s) => [s.name, s.from])).toEqual([
      ['build', 'node:22-bookworm-slim'],
      ['runtime', 'node:22-bookworm-slim'],
    ]);
    const runs = build!.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
    expect(runs).toEqual(['bash deploy/build.sh deps', 'bash deploy/build.sh app']);
    expect(build!.instructions.map((i) => i.op)).toEqual(['WORKDIR', 'COPY', 'COPY', 'RUN', 'COPY', 'RUN']);
    const script = readFileSync(join(ROOT, 'deploy/build.sh'), 'utf8');
    for (const step of [
      'libvirt-dev',
      'npm ci',
      'npm run --silent build:native',
      'npm run --silent build',
      'npm prune --omit=dev',
    ])
      expect(script).toContain(step);
  });

  it('runs as a non-root user with only the runtime libraries, the config file and state where the Deployment puts them', () => {
    const ops = (op: string) => runtime!.instructions.filter((i) => i.op === op).map((i) => i.args);
    const [setup] = ops('RUN');
    const installed = /apt-get install ([^&]*)/
      .exec(setup!)![1]!
      .split(/\s+/)
      .filter((w) => w && !w.startsWith('-'));
    expect(installed).toEqual(['libvirt0', 'ca-certificates']);
    expect(setup).not.toMatch(/libvirt-dev|g\+\+|python3/);

    const [user] = ops('USER');
    const [uid, gid] = user!.split(':').map(Number);
    expect(uid).toBeGreaterThan(0);
    expect(uid).toBe(pod.securityContext!.runAsUser);
    expect(gid).toBe(pod.securityContext!.runAsGroup);
    expect(ops('EXPOSE')).toEqual([String(config.server.port)]);
    expect(ops('ENV').join(' ')).toContain('VIRT_GRAPH_CONFIG=/etc/virt-graph/config.yaml');
    expect(ops('VOLUME')).toEqual(['["/var/lib/virt-graph"]']);
    expect(gateway.volumeMounts?.find((m) => m.mountPath === '/var/lib/virt-graph')).toBeDefined();
    expect(ops('ENTRYPOINT')).toEqual(['["node", "/app/dist/main.js"]']);
    expect(ops('CMD')).toEqual(['["serve"]']);

    // What the gateway reads at run time besides dist/: its dependencies,
    // schema/ (next to dist/, as src/server/schema.ts finds it) and the addon.
    const copied = ops('COPY').map((c) => c.split(/\s+/));
    expect(copied.every((c) => c[0] === '--from=build')).toBe(true);
    expect(copied.map((c) => c[2])).toEqual([
      './package.json',
      './node_modules',
      './schema',
      './dist',
      './native/libvirt/build/Release/virt_graph_libvirt.node',
    ]);
    expect(readFileSync(join(ROOT, 'src/datasources/libvirt/addon.ts'), 'utf8')).toContain(
      "'../../../native/libvirt/build/Release/virt_graph_libvirt.node'",
    );
  });

  it('keeps out of the build context only what the build does not need', () => {
    const patterns = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.replace(/#.*/, '').trim())
      .filter(Boolean);
    // As deploy/check-dockerfile.sh applies them: a path from the root, or **/NAME anywhere.
    const ignored = (path: string) =>
      patterns.some((p) =>
        p.startsWith('**/')
          ? path.split('/').some((_, i, parts) => matchesGlob(parts.slice(i).join('/'), p.slice(3)))
          : path === p || path.startsWith(`${p}/`),
      );
    for (const needed of [
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'tsconfig.build.json',
      'codegen.ts',
      'deploy/build.sh',
      'schema/base.graphql',
      'native/libvirt/binding.gyp',
      'native/libvirt/src/addon.cc',
      'src/main.ts',
    ])
      expect(ignored(needed), needed).toBe(false);
    for (const junk of ['node_modules/x', 'native/libvirt/build/Release/x.node', 'dist/main.js', '.git/HEAD', '.env'])
      expect(ignored(junk), junk).toBe(true);
    expect(existsSync(join(dirname(MANIFESTS), 'build.sh'))).toBe(true);
  });
});

/** A .dockerignore glob (`*` within a name) against a whole relative path. */
function matchesGlob(path: string, glob: string): boolean {
  const re = new RegExp(
    `^${glob
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '[^/]*')
      .replace(/\?/g, '[^/]')}$`,
  );
  return re.test(path);
}
