// Static checks of everything under deploy/ (and .dockerignore): the fields an
// operator relies on, cross-checked against each other and against the code
// (ports, commands, exchange and queue names, metric names). Envoy configs are
// also checked field by field against Envoy's own protos (from
// @grpc/grpc-js-xds), since Envoy itself is not installed here.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { Registry } from 'prom-client';
import { registerCacheAsideMetrics } from '../../src/cache-aside/metrics.ts';
import { GRANTS_QUEUE } from '../../src/catalog/grant.ts';
import { buildCli } from '../../src/cli/main.ts';
import { blacklistDataset } from '../../src/datasets/blacklist.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { createMetricsRegistry } from '../../src/observe/metrics.ts';
import { GRANTS_DLQ } from '../../src/services/catalog/grants-writer.ts';
import type { DecisionLog } from '../../src/services/ext-authz/decision.ts';
import { registerAuthzMetrics } from '../../src/services/ext-authz/metrics.ts';
import { MATCH_DLQ, MATCH_QUEUE } from '../../src/services/match-worker/worker.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const DEPLOY = join(ROOT, 'deploy');

/** CONTRACT.md's services and default ports. */
const SERVICES: Record<string, { PORT?: number; ADMIN_PORT: number; GRPC_PORT?: number }> = {
  auth: { PORT: 8001, ADMIN_PORT: 9001 },
  'ext-authz': { PORT: 8002, ADMIN_PORT: 9002, GRPC_PORT: 9191 },
  catalog: { PORT: 8003, ADMIN_PORT: 9003 },
  'match-worker': { ADMIN_PORT: 9004 },
};
const FANOUT_EXCHANGES = [catalogDataset.topic, blacklistDataset.topic];

// ------------------------------------------------------------------ helpers

type Obj = Record<string, unknown>;

/**
 * assert.ok with a required message: without one, Node builds the message
 * by re-reading and parsing this file, which can stall for minutes here.
 */
function ok(value: unknown, message: string): asserts value {
  assert.ok(value, message);
}
function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function obj(v: unknown, what: string): Obj {
  ok(isObj(v), `${what}: expected a mapping, got ${JSON.stringify(v)}`);
  return v;
}
function arr(v: unknown, what: string): unknown[] {
  ok(Array.isArray(v), `${what}: expected a list, got ${JSON.stringify(v)}`);
  return v;
}
function str(v: unknown, what: string): string {
  assert.equal(typeof v, 'string', `${what}: expected a string, got ${JSON.stringify(v)}`);
  return v as string;
}
/** Follows a path of keys and indexes; undefined when any step is missing. */
function at(v: unknown, ...path: Array<string | number>): unknown {
  let cur = v;
  for (const key of path) {
    if (typeof key === 'number') cur = Array.isArray(cur) ? cur[key] : undefined;
    else cur = isObj(cur) ? cur[key] : undefined;
  }
  return cur;
}
/** Every value in a tree with its key, depth first. */
function* walk(v: unknown, key = ''): Generator<[string, unknown]> {
  yield [key, v];
  if (Array.isArray(v)) for (const item of v) yield* walk(item, key);
  else if (isObj(v)) for (const [k, child] of Object.entries(v)) yield* walk(child, k);
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...filesUnder(path));
    else out.push(path);
  }
  return out.sort();
}

/** Every document of a YAML file, as plain JS; fails on any parse error or warning. */
function loadYaml(path: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'), { merge: true });
  const list = Array.isArray(docs) ? docs : [docs];
  const out: unknown[] = [];
  for (const doc of list) {
    const issues = [...doc.errors, ...doc.warnings].map((e) => e.message);
    assert.deepEqual(issues, [], `${relative(ROOT, path)} does not parse cleanly`);
    const value: unknown = doc.toJS({ maxAliasCount: 1000 });
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

// ------------------------------------------------------------------ parse everything

describe('deploy/: every file parses', () => {
  const files = filesUnder(DEPLOY);

  it('has the expected layout', () => {
    const rel = new Set(files.map((f) => relative(DEPLOY, f)));
    for (const expected of [
      'Dockerfile',
      'compose.yml',
      'k8s/kustomization.yaml',
      'envoy/envoy-http.yaml',
      'envoy/envoy-grpc.yaml',
      'istio/mesh-config.yaml',
      'istio/authorization-policy.yaml',
      'nginx/auth-request.conf.template',
      'grafana/cachecast-dashboard.json',
      'rabbitmq/definitions.json',
    ]) {
      ok(rel.has(expected), `deploy/${expected} is missing`);
    }
  });

  for (const file of files.filter((f) => /\.(ya?ml|json)$/.test(f))) {
    it(`parses ${relative(ROOT, file)}`, () => {
      if (file.endsWith('.json')) JSON.parse(readFileSync(file, 'utf8'));
      else ok(loadYaml(file).length > 0, 'no document');
    });
  }
});

// ------------------------------------------------------------------ Kubernetes

const K8S = join(DEPLOY, 'k8s');
const kustomization = obj(loadYaml(join(K8S, 'kustomization.yaml'))[0], 'kustomization');
const listed = arr(kustomization.resources, 'kustomization resources').map((r) => str(r, 'resource'));
const k8sDocs = listed.flatMap((file) =>
  existsSync(join(K8S, file)) ? loadYaml(join(K8S, file)).map((d) => obj(d, file)) : [],
);
const ofKind = (kind: string): Obj[] => k8sDocs.filter((d) => d.kind === kind);
const nameOf = (d: Obj): string => str(at(d, 'metadata', 'name'), 'metadata.name');
const deployments = ofKind('Deployment');
const podLabels = (d: Obj): Obj =>
  obj(at(d, 'spec', 'template', 'metadata', 'labels'), `${nameOf(d)} labels`);
const matches = (selector: Obj, labels: Obj): boolean =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
const secretExample = obj(loadYaml(join(K8S, 'secret.example.yaml'))[0], 'secret.example.yaml');
const secretKeys = new Set(Object.keys(obj(secretExample.stringData, 'secret stringData')));
const secretName = nameOf(secretExample);

function containers(podOwner: Obj): Obj[] {
  return arr(at(podOwner, 'spec', 'template', 'spec', 'containers'), `${nameOf(podOwner)} containers`).map(
    (c, i) => obj(c, `${nameOf(podOwner)} container ${i}`),
  );
}
function envOf(container: Obj): Map<string, Obj> {
  const env = new Map<string, Obj>();
  for (const e of (container.env as unknown[] | undefined) ?? []) {
    const entry = obj(e, 'env entry');
    env.set(str(entry.name, 'env name'), entry);
  }
  return env;
}
function portsOf(container: Obj): Array<{ name?: string; containerPort: number }> {
  return ((container.ports as unknown[] | undefined) ?? []).map((p) => {
    const port = obj(p, 'container port');
    return { name: port.name as string | undefined, containerPort: Number(port.containerPort) };
  });
}
/** A probe's or Service's port (a name or a number) as a container port number. */
function resolvePort(container: Obj, port: unknown): number | undefined {
  if (typeof port === 'number')
    return portsOf(container).some((p) => p.containerPort === port) ? port : undefined;
  return portsOf(container).find((p) => p.name === port)?.containerPort;
}

describe('deploy/k8s', () => {
  it('kustomization lists exactly the manifests present (secret.example.yaml deliberately not)', () => {
    const present = readdirSync(K8S)
      .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml' && !f.endsWith('.example.yaml'))
      .sort();
    assert.deepEqual([...listed].sort(), present);
    assert.equal(new Set(listed).size, listed.length, 'a resource is listed twice');
    assert.equal(kustomization.namespace, undefined, 'the base is namespace-agnostic');
    for (const d of k8sDocs)
      assert.equal(at(d, 'metadata', 'namespace'), undefined, `${nameOf(d)} sets a namespace`);
  });

  it('has one Deployment per service, each running `serve <service>`', () => {
    const served = deployments.map((d) => {
      const [c] = containers(d);
      const args = arr(c!.args ?? c!.command, `${nameOf(d)} args`);
      assert.equal(args.length, 2, `${nameOf(d)}: args ${JSON.stringify(args)}`);
      assert.equal(args[0], 'serve', `${nameOf(d)}: args ${JSON.stringify(args)}`);
      ok(str(args[1], 'service') in SERVICES, `${nameOf(d)}: unknown service ${String(args[1])}`);
      return args[1] as string;
    });
    assert.deepEqual(served.sort(), Object.keys(SERVICES).sort());
    const cli = buildCli().commands.map((c) => c.name());
    for (const command of ['serve', 'migrate', 'warmup', 'import']) ok(cli.includes(command), command);
  });

  for (const d of deployments) {
    const name = nameOf(d);
    const container = containers(d)[0]!;
    const service = String(arr(container.args, 'args')[1]);
    const env = envOf(container);
    const envNumber = (key: string): number | undefined =>
      env.has(key) ? Number(str(env.get(key)!.value, `${name} ${key}`)) : undefined;

    describe(`Deployment ${name}`, () => {
      it('selects its own pods', () => {
        ok(
          matches(obj(at(d, 'spec', 'selector', 'matchLabels'), 'selector'), podLabels(d)),
          `${name}: selector does not match the pod labels`,
        );
      });

      it('sets the contract ports in env and as container ports', () => {
        const expected = SERVICES[service]!;
        assert.equal(envNumber('ADMIN_PORT'), expected.ADMIN_PORT, 'ADMIN_PORT');
        assert.equal(resolvePort(container, 'admin'), expected.ADMIN_PORT, 'container port "admin"');
        assert.equal(envNumber('PORT'), expected.PORT, 'PORT');
        if (expected.PORT)
          assert.equal(resolvePort(container, 'http'), expected.PORT, 'container port "http"');
        assert.equal(envNumber('GRPC_PORT'), expected.GRPC_PORT, 'GRPC_PORT');
        if (expected.GRPC_PORT)
          assert.equal(resolvePort(container, 'grpc'), expected.GRPC_PORT, 'container port "grpc"');
      });

      it('probes /readyz (readiness, startup) and /healthz (liveness) on the admin port', () => {
        const admin = envNumber('ADMIN_PORT');
        for (const [probe, path] of [
          ['readinessProbe', '/readyz'],
          ['startupProbe', '/readyz'],
          ['livenessProbe', '/healthz'],
        ] as const) {
          const get = obj(at(container, probe, 'httpGet'), `${name} ${probe}.httpGet`);
          assert.equal(get.path, path, `${name} ${probe} path`);
          assert.equal(resolvePort(container, get.port), admin, `${name} ${probe} port`);
        }
      });

      it('has requests and limits, and runs non-root, read-only, with no capabilities', () => {
        for (const kind of ['requests', 'limits'])
          for (const resource of ['cpu', 'memory'])
            ok(at(container, 'resources', kind, resource), `${name} resources.${kind}.${resource}`);
        const pod = obj(at(d, 'spec', 'template', 'spec', 'securityContext'), `${name} pod securityContext`);
        const own = obj(container.securityContext, `${name} container securityContext`);
        ok(pod.runAsNonRoot === true || own.runAsNonRoot === true, 'runAsNonRoot');
        assert.notEqual(own.runAsUser ?? pod.runAsUser, 0, 'runAsUser 0');
        assert.equal(own.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem');
        assert.equal(own.allowPrivilegeEscalation, false, 'allowPrivilegeEscalation');
        ok(arr(at(own, 'capabilities', 'drop'), 'drop').includes('ALL'), 'capabilities.drop ALL');
      });

      it('sleeps in preStop before SIGTERM, within the grace period', () => {
        const command = at(container, 'lifecycle', 'preStop', 'exec', 'command');
        const sleepAction = at(container, 'lifecycle', 'preStop', 'sleep', 'seconds');
        let seconds: number;
        if (sleepAction !== undefined) seconds = Number(sleepAction);
        else {
          const argv = arr(command, `${name} preStop`);
          assert.equal(argv[0], 'sleep', `${name} preStop is not a sleep`);
          seconds = Number(argv[1]);
        }
        ok(seconds >= 3, `${name} preStop sleep ${seconds}s is too short for endpoints to update`);
        const grace = Number(at(d, 'spec', 'template', 'spec', 'terminationGracePeriodSeconds'));
        ok(grace >= seconds + 10, `${name} terminationGracePeriodSeconds ${grace} leaves no time to drain`);
      });

      it("may get ADMIN_PORT_TOKEN (the admin port's detail routes); the probes need none", () => {
        const ref = at(env.get('ADMIN_PORT_TOKEN'), 'valueFrom', 'secretKeyRef');
        assert.equal(at(ref, 'key'), 'ADMIN_PORT_TOKEN', `${name} ADMIN_PORT_TOKEN`);
        assert.equal(at(ref, 'optional'), true, `${name}: a pod must start without it`);
        for (const probe of ['readinessProbe', 'startupProbe', 'livenessProbe'])
          assert.equal(
            at(container, probe, 'httpGet', 'httpHeaders'),
            undefined,
            `${name} ${probe} sends no token`,
          );
      });

      it('is scraped by Prometheus on its admin port', () => {
        const a = obj(at(d, 'spec', 'template', 'metadata', 'annotations'), `${name} pod annotations`);
        assert.equal(a['prometheus.io/scrape'], 'true');
        assert.equal(Number(a['prometheus.io/port']), envNumber('ADMIN_PORT'));
        assert.equal(a['prometheus.io/path'], '/metrics');
      });

      it('takes its settings from the ConfigMap and Secret that exist', () => {
        assertEnvSources(name, container);
        const image = str(container.image, 'image');
        const images = arr(kustomization.images, 'kustomization images').map((i) => at(i, 'name'));
        ok(images.includes(image), `image ${image} is not set by kustomization images`);
      });
    });
  }

  it("auth, ext-authz and catalog (users' collections) take JWT_SECRET from the same Secret key", () => {
    for (const service of ['auth', 'ext-authz', 'catalog']) {
      const d = deployments.find((x) => at(containers(x)[0], 'args', 1) === service);
      ok(d, `no Deployment serves ${service}`);
      const ref = at(envOf(containers(d)[0]!).get('JWT_SECRET'), 'valueFrom', 'secretKeyRef');
      assert.equal(at(ref, 'key'), 'JWT_SECRET', `${service} JWT_SECRET`);
      assert.notEqual(at(ref, 'optional'), true, `${service}: without it the development key would be used`);
    }
  });

  it('runs signed: every service and the warmup Job require CACHE_EVENT_SECRET from the Secret', () => {
    const owners = [
      ...deployments,
      ...ofKind('Job').filter((j) => at(containers(j)[0], 'args', 0) === 'warmup'),
    ];
    assert.equal(owners.length, deployments.length + 1, 'the warmup Job');
    for (const owner of owners) {
      const ref = at(envOf(containers(owner)[0]!).get('CACHE_EVENT_SECRET'), 'valueFrom', 'secretKeyRef');
      assert.equal(at(ref, 'key'), 'CACHE_EVENT_SECRET', `${nameOf(owner)} CACHE_EVENT_SECRET`);
      assert.notEqual(at(ref, 'optional'), true, `${nameOf(owner)} would start unsigned without it`);
    }
  });

  it('HorizontalPodAutoscalers (autoscaling/v2) scale ext-authz, catalog and match-worker Deployments', () => {
    const hpas = ofKind('HorizontalPodAutoscaler');
    const targets = hpas.map((h) => {
      assert.equal(h.apiVersion, 'autoscaling/v2', nameOf(h));
      const ref = obj(at(h, 'spec', 'scaleTargetRef'), 'scaleTargetRef');
      assert.equal(ref.kind, 'Deployment');
      assert.equal(ref.apiVersion, 'apps/v1');
      const target = deployments.find((d) => nameOf(d) === ref.name);
      ok(target, `${nameOf(h)} scales a Deployment that does not exist: ${String(ref.name)}`);
      assert.equal(
        at(target, 'spec', 'replicas'),
        undefined,
        `${nameOf(target)} sets replicas that fight its HPA`,
      );
      const min = Number(at(h, 'spec', 'minReplicas'));
      ok(min >= 2 && min <= Number(at(h, 'spec', 'maxReplicas')), `${nameOf(h)} min/max`);
      for (const m of arr(at(h, 'spec', 'metrics'), 'metrics')) {
        const name = at(m, 'resource', 'name');
        if (name === undefined) continue;
        const resource = str(name, 'metric resource name');
        ok(
          at(containers(target)[0], 'resources', 'requests', resource),
          `${nameOf(h)} scales on ${resource} utilization but the pod requests none`,
        );
      }
      return str(at(containers(target)[0], 'args', 1), 'service');
    });
    assert.deepEqual(targets.sort(), ['catalog', 'ext-authz', 'match-worker']);
  });

  it('PodDisruptionBudgets cover every Deployment', () => {
    const pdbs = ofKind('PodDisruptionBudget');
    for (const d of deployments) {
      ok(
        pdbs.some((p) =>
          matches(obj(at(p, 'spec', 'selector', 'matchLabels'), 'pdb selector'), podLabels(d)),
        ),
        `no PodDisruptionBudget selects ${nameOf(d)}`,
      );
    }
    for (const p of pdbs) {
      assert.equal(p.apiVersion, 'policy/v1');
      ok(
        at(p, 'spec', 'maxUnavailable') !== undefined || at(p, 'spec', 'minAvailable') !== undefined,
        `${nameOf(p)}: maxUnavailable or minAvailable`,
      );
    }
  });

  it('Services select existing pods and target their container ports', () => {
    const services = ofKind('Service');
    ok(services.length > 0, 'no Service');
    for (const s of services) {
      const selector = obj(at(s, 'spec', 'selector'), `${nameOf(s)} selector`);
      const selected = deployments.filter((d) => matches(selector, podLabels(d)));
      assert.equal(selected.length, 1, `Service ${nameOf(s)} selects ${selected.length} Deployments`);
      const container = containers(selected[0]!)[0]!;
      for (const p of arr(at(s, 'spec', 'ports'), 'ports')) {
        const port = obj(p, 'service port');
        const target = port.targetPort ?? port.port;
        ok(
          resolvePort(container, target) !== undefined,
          `Service ${nameOf(s)} targets port ${String(target)} that ${nameOf(selected[0]!)} does not have`,
        );
        assert.notEqual(
          resolvePort(container, target),
          SERVICES[String(at(container, 'args', 1))]?.ADMIN_PORT,
          `Service ${nameOf(s)} exposes the admin port`,
        );
      }
    }
    const authz = services.find((s) => nameOf(s) === 'ext-authz');
    ok(authz, 'Service ext-authz');
    const ports = arr(at(authz, 'spec', 'ports'), 'ports').map((p) => obj(p, 'port'));
    ok(
      ports.some((p) => p.port === 8002 && p.appProtocol === 'http'),
      'ext-authz Service: 8002, appProtocol http',
    );
    ok(
      ports.some((p) => p.port === 9191 && p.appProtocol === 'grpc'),
      'ext-authz Service: 9191, appProtocol grpc',
    );
    for (const name of ['auth', 'catalog'])
      ok(
        services.some((s) => nameOf(s) === name),
        `Service ${name}`,
      );
  });

  it('runs migrate as an Argo CD PreSync hook and warmup as PostSync, both deleted once succeeded', () => {
    const jobs = ofKind('Job');
    const byCommand = (command: string): Obj => {
      const job = jobs.find((j) => JSON.stringify(containers(j)[0]!.args) === JSON.stringify([command]));
      ok(job, `no Job runs \`cachecast ${command}\``);
      return job;
    };
    for (const [command, hook] of [
      ['migrate', 'PreSync'],
      ['warmup', 'PostSync'],
    ] as const) {
      const job = byCommand(command);
      const a = obj(at(job, 'metadata', 'annotations'), `${nameOf(job)} annotations`);
      assert.equal(a['argocd.argoproj.io/hook'], hook, `${nameOf(job)} hook`);
      const policies = str(a['argocd.argoproj.io/hook-delete-policy'], 'delete policy').split(',');
      ok(policies.includes('HookSucceeded'), `${nameOf(job)} hook-delete-policy ${policies.join(',')}`);
      ok(
        ['Never', 'OnFailure'].includes(String(at(job, 'spec', 'template', 'spec', 'restartPolicy'))),
        `${nameOf(job)} restartPolicy`,
      );
      const c = containers(job)[0]!;
      assert.equal(
        at(c, 'securityContext', 'runAsNonRoot') ??
          at(job, 'spec', 'template', 'spec', 'securityContext', 'runAsNonRoot'),
        true,
      );
      ok(at(c, 'resources', 'limits', 'memory'), `${nameOf(job)} limits`);
      assertEnvSources(nameOf(job), c);
      ok(envOf(c).has('DATABASE_URL'), `${nameOf(job)} needs DATABASE_URL`);
    }
    // PreSync runs before the ConfigMap is applied on a first sync.
    ok(
      !JSON.stringify(containers(byCommand('migrate'))[0]).includes('configMap'),
      'the PreSync migrate Job must not need the ConfigMap',
    );
    ok(envOf(containers(byCommand('warmup'))[0]!).has('RABBITMQ_URL'), 'warmup publishes');
  });

  it('declares the fanout exchanges and the Celery queue with the code names and properties', () => {
    const topology = k8sDocs.filter((d) => String(d.apiVersion).startsWith('rabbitmq.com/'));
    for (const d of topology) {
      assert.equal(d.apiVersion, 'rabbitmq.com/v1beta1', nameOf(d));
      ok(at(d, 'spec', 'rabbitmqClusterReference', 'name'), `${nameOf(d)} rabbitmqClusterReference`);
    }
    const exchange = (name: string): Obj | undefined =>
      topology.find((d) => d.kind === 'Exchange' && at(d, 'spec', 'name') === name);
    const queue = (name: string): Obj | undefined =>
      topology.find((d) => d.kind === 'Queue' && at(d, 'spec', 'name') === name);
    for (const name of FANOUT_EXCHANGES) {
      const ex = exchange(name);
      ok(ex, `no Exchange ${name}`);
      assert.equal(at(ex, 'spec', 'type'), 'fanout', name);
      assert.equal(at(ex, 'spec', 'durable'), true, name);
      assert.notEqual(at(ex, 'spec', 'autoDelete'), true, name);
    }
    // Celery's own declaration: durable direct exchange + durable queue with no other arguments,
    // of the type the services declare (MATCH_QUEUE_TYPE in the ConfigMap).
    const configMap = k8sDocs.find((d) => d.kind === 'ConfigMap');
    const configured = at(configMap, 'data', 'MATCH_QUEUE_TYPE');
    const matchType = typeof configured === 'string' ? configured : 'classic';
    assert.equal(at(exchange(MATCH_QUEUE), 'spec', 'type'), 'direct');
    assert.equal(at(exchange(MATCH_QUEUE), 'spec', 'durable'), true);
    const match = queue(MATCH_QUEUE);
    ok(match, `no Queue ${MATCH_QUEUE}`);
    assert.equal(at(match, 'spec', 'durable'), true);
    assert.equal(at(match, 'spec', 'arguments'), undefined, 'Celery declares it with no other arguments');
    assert.equal(
      (at(match, 'spec', 'type') as string | undefined) ?? 'classic',
      matchType,
      `${MATCH_QUEUE}: the type the services declare (MATCH_QUEUE_TYPE)`,
    );
    const binding = topology.find(
      (d) =>
        d.kind === 'Binding' &&
        at(d, 'spec', 'source') === MATCH_QUEUE &&
        at(d, 'spec', 'destination') === MATCH_QUEUE,
    );
    ok(binding, `no Binding ${MATCH_QUEUE} -> ${MATCH_QUEUE}`);
    assert.equal(at(binding, 'spec', 'destinationType'), 'queue');
    assert.equal(at(binding, 'spec', 'routingKey'), MATCH_QUEUE);
    for (const name of [MATCH_DLQ, GRANTS_QUEUE, GRANTS_DLQ]) {
      const q = queue(name);
      if (q) {
        assert.equal(at(q, 'spec', 'durable'), true, name);
        assert.equal((at(q, 'spec', 'type') as string | undefined) ?? 'classic', matchType, name);
        assert.equal(
          at(q, 'spec', 'arguments'),
          undefined,
          `${name}: the code declares it without arguments`,
        );
      }
    }
  });
});

// ------------------------------------------------------------------ RabbitMQ users

interface Permission {
  user: string;
  vhost: string;
  configure: string;
  write: string;
  read: string;
}
const definitions = obj(
  JSON.parse(readFileSync(join(DEPLOY, 'rabbitmq', 'definitions.json'), 'utf8')),
  'definitions.json',
);
const permissions = arr(definitions.permissions, 'permissions') as Permission[];
/** RabbitMQ matches a permission's regular expression anywhere in the name (they are anchored here). */
const may = (user: string, kind: 'configure' | 'write' | 'read', resource: string): boolean =>
  permissions.some((p) => p.user === user && new RegExp(p[kind]).test(resource));
const SERVICE_USERS: Record<string, string> = {
  auth: 'cachecast-auth',
  'ext-authz': 'cachecast-ext-authz',
  catalog: 'cachecast-catalog',
  'match-worker': 'cachecast-match-worker',
};

describe('deploy/rabbitmq/definitions.json', () => {
  it('has a user per service (and the Celery producer), with no password and no tags', () => {
    const users = arr(definitions.users, 'users').map((u) => obj(u, 'user'));
    assert.deepEqual(
      users.map((u) => u.name).sort(),
      [...Object.values(SERVICE_USERS), 'cachecast-match-client'].sort(),
    );
    for (const u of users) {
      assert.equal(u.password_hash, '', `${String(u.name)}: passwords are set on the broker, never in git`);
      assert.deepEqual(u.tags, [], `${String(u.name)}: no management or administrator tag`);
    }
    for (const p of permissions) {
      assert.equal(p.vhost, '/', `${p.user}: the vhost of rabbitmq-topology.yaml`);
      for (const kind of ['configure', 'write', 'read'] as const)
        for (const alternative of p[kind].split('|'))
          assert.match(
            alternative,
            /^\^.*\$$/,
            `${p.user} ${kind}: anchored, or it would match any name containing it`,
          );
    }
  });

  it('lets only auth write auth.blacklist.events and only the catalog write character.cache; replicas only read', () => {
    const users = permissions.map((p) => p.user);
    const [blacklist, catalog] = [blacklistDataset.topic, catalogDataset.topic];
    assert.deepEqual(
      users.filter((u) => may(u, 'write', blacklist)),
      ['cachecast-auth'],
    );
    assert.deepEqual(
      users.filter((u) => may(u, 'write', catalog)),
      ['cachecast-catalog'],
    );
    // Each replica binds its own queue `<exchange>.<instance id>` and reads it.
    for (const [user, topic] of [
      ['cachecast-ext-authz', blacklist],
      ['cachecast-catalog', catalog],
      ['cachecast-match-worker', catalog],
    ] as const) {
      const queue = `${topic}.pod-7f9c-0a1b2c3d`;
      ok(
        may(user, 'configure', queue) && may(user, 'write', queue) && may(user, 'read', queue),
        `${user} ${queue}`,
      );
      ok(may(user, 'read', topic), `${user} reads ${topic}`);
    }
    ok(
      !may('cachecast-ext-authz', 'read', catalog) && !may('cachecast-match-worker', 'read', blacklist),
      'only its own dataset',
    );
    for (const user of ['cachecast-auth', 'cachecast-ext-authz', 'cachecast-match-client'])
      ok(!may(user, 'write', 'amq.default'), `${user} cannot publish into queues by name`);
  });

  it('is what each Deployment and the warmup Job connect as (their RABBITMQ_URL key in the Secret)', () => {
    const secretUrls = obj(secretExample.stringData, 'secret stringData');
    const owners: Array<[Obj, string]> = deployments.map((d) => [
      d,
      SERVICE_USERS[String(at(containers(d)[0], 'args', 1))]!,
    ]);
    const warmup = ofKind('Job').find((j) => at(containers(j)[0], 'args', 0) === 'warmup');
    ok(warmup, 'the warmup Job');
    owners.push([warmup, SERVICE_USERS.catalog!]);
    for (const [owner, user] of owners) {
      const key = str(
        at(envOf(containers(owner)[0]!).get('RABBITMQ_URL'), 'valueFrom', 'secretKeyRef', 'key'),
        'key',
      );
      const url = new URL(str(secretUrls[key], `${key} in secret.example.yaml`));
      assert.equal(decodeURIComponent(url.username), user, `${nameOf(owner)} connects as ${user}`);
    }
  });
});

function assertEnvSources(owner: string, container: Obj): void {
  for (const [name, entry] of envOf(container)) {
    const ref = at(entry, 'valueFrom', 'secretKeyRef');
    if (ref) {
      assert.equal(at(ref, 'name'), secretName, `${owner} ${name}: unknown Secret`);
      ok(secretKeys.has(str(at(ref, 'key'), 'key')), `${owner} ${name}: key not in secret.example.yaml`);
    }
  }
  const configMaps = new Set(ofKind('ConfigMap').map(nameOf));
  for (const source of (container.envFrom as unknown[] | undefined) ?? []) {
    const ref = at(source, 'configMapRef', 'name');
    if (ref !== undefined) {
      const cm = str(ref, 'configMapRef.name');
      ok(configMaps.has(cm), `${owner}: ConfigMap ${cm} does not exist`);
    }
    assert.equal(
      at(source, 'secretRef'),
      undefined,
      `${owner}: envFrom a Secret hands every secret to every pod`,
    );
  }
}

// ------------------------------------------------------------------ Envoy

const HCM =
  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const EXT_AUTHZ = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz';
const EXT_AUTHZ_PER_ROUTE = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const HTTP_OPTIONS = 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions';

interface EnvoyParts {
  config: Obj;
  clusters: Map<string, Obj>;
  authz: Obj;
  filterNames: string[];
}

function envoyParts(file: string): EnvoyParts {
  const config = obj(loadYaml(join(DEPLOY, 'envoy', file))[0], file);
  const clusters = new Map(
    arr(at(config, 'static_resources', 'clusters'), 'clusters').map((c) => [
      str(at(c, 'name'), 'cluster name'),
      obj(c, 'cluster'),
    ]),
  );
  const [listener] = arr(at(config, 'static_resources', 'listeners'), 'listeners');
  assert.equal(at(listener, 'address', 'socket_address', 'port_value'), 10000, `${file} listener port`);
  const hcm = obj(at(listener, 'filter_chains', 0, 'filters', 0, 'typed_config'), 'hcm');
  assert.equal(hcm['@type'], HCM);
  const filters = arr(hcm.http_filters, 'http_filters').map((f) => obj(f, 'filter'));
  const authzFilter = filters.find((f) => f.name === 'envoy.filters.http.ext_authz');
  ok(authzFilter, `${file}: no envoy.filters.http.ext_authz`);
  const authz = obj(authzFilter.typed_config, 'ext_authz typed_config');
  assert.equal(authz['@type'], EXT_AUTHZ);
  const last = filters.at(-1)!;
  assert.equal(last.name, 'envoy.filters.http.router', `${file}: the router must be the last filter`);
  assert.equal(at(last, 'typed_config', '@type'), ROUTER);
  return { config, clusters, authz, filterNames: filters.map((f) => String(f.name)) };
}

function endpointPorts(cluster: Obj): number[] {
  return [...walk(cluster.load_assignment)].filter(([k]) => k === 'port_value').map(([, v]) => Number(v));
}

describe('deploy/envoy', () => {
  for (const file of ['envoy-http.yaml', 'envoy-grpc.yaml']) {
    it(`${file}: every cluster referenced exists; typed_config names are exact`, () => {
      const { config, clusters } = envoyParts(file);
      for (const [key, value] of walk(config)) {
        if ((key === 'cluster' || key === 'cluster_name') && typeof value === 'string')
          ok(clusters.has(value), `${file} references cluster ${value}, which is not defined`);
        if (key === '@type')
          ok(
            [HCM, EXT_AUTHZ, EXT_AUTHZ_PER_ROUTE, ROUTER, HTTP_OPTIONS].includes(str(value, '@type')),
            `${file}: unexpected @type ${String(value)}`,
          );
      }
    });

    it(`${file}: fails closed in 200 ms, sends Authorization, forwards no body`, () => {
      const { authz } = envoyParts(file);
      assert.equal(authz.failure_mode_allow, false);
      assert.equal(authz.with_request_body, undefined);
      assert.equal(authz.transport_api_version, 'V3');
      const allowed =
        authz.allowed_headers ?? at(authz, 'http_service', 'authorization_request', 'allowed_headers');
      ok(
        arr(at(allowed, 'patterns'), 'allowed_headers.patterns').some(
          (p) => at(p, 'exact') === 'authorization',
        ),
        'allowed_headers must include authorization',
      );
    });

    it(`${file}: is valid against Envoy's v3 protos (no unknown or deprecated fields)`, () => {
      const problems = checkEnvoy(envoyParts(file).config);
      assert.deepEqual(problems, []);
    });
  }

  it('envoy-http.yaml: HTTP service on ext-authz:8002, x-user-id and x-auth-jti upstream', () => {
    const { authz, clusters } = envoyParts('envoy-http.yaml');
    const uri = obj(at(authz, 'http_service', 'server_uri'), 'server_uri');
    assert.equal(uri.timeout, '0.2s');
    assert.equal(new URL(str(uri.uri, 'uri')).port, '8002');
    assert.deepEqual(endpointPorts(clusters.get(str(uri.cluster, 'cluster'))!), [8002]);
    const upstream = arr(
      at(authz, 'http_service', 'authorization_response', 'allowed_upstream_headers', 'patterns'),
      'patterns',
    );
    assert.deepEqual(upstream.map((p) => at(p, 'exact')).sort(), ['x-auth-jti', 'x-user-id']);
  });

  it('envoy-grpc.yaml: gRPC service on an HTTP/2 cluster at port 9191', () => {
    const { authz, clusters } = envoyParts('envoy-grpc.yaml');
    assert.equal(at(authz, 'grpc_service', 'timeout'), '0.2s');
    const cluster = clusters.get(
      str(at(authz, 'grpc_service', 'envoy_grpc', 'cluster_name'), 'cluster_name'),
    );
    ok(cluster, 'the gRPC cluster is not defined');
    assert.deepEqual(endpointPorts(cluster), [9191]);
    const h2 =
      at(
        cluster,
        'typed_extension_protocol_options',
        'envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        'explicit_http_config',
        'http2_protocol_options',
      ) ?? at(cluster, 'http2_protocol_options');
    ok(h2 !== undefined, 'the gRPC cluster must speak HTTP/2');
  });
});

// Envoy's protos, loaded with the protobufjs that @grpc/proto-loader uses.
interface PbField {
  name: string;
  repeated: boolean;
  map: boolean;
  type: string;
  resolvedType: PbType | PbEnum | null;
  options?: Record<string, unknown>;
}
interface PbType {
  fullName: string;
  fields: Record<string, PbField>;
  oneofsArray: Array<{ name: string; fieldsArray: PbField[] }>;
}
interface PbEnum {
  fullName: string;
  values: Record<string, number>;
}
interface PbRoot {
  resolvePath: (origin: string, target: string) => string;
  loadSync(files: string[], options: { keepCase: boolean }): PbRoot;
  resolveAll(): PbRoot;
  lookupType(name: string): PbType;
}

let envoyRoot: PbRoot | undefined;
function loadEnvoyProtos(): PbRoot {
  if (envoyRoot) return envoyRoot;
  const require = createRequire(import.meta.url);
  const protobuf = createRequire(require.resolve('@grpc/proto-loader'))('protobufjs') as {
    Root: new () => PbRoot;
    common: Record<string, unknown>;
  };
  const protobufDir = dirname(
    createRequire(require.resolve('@grpc/proto-loader')).resolve('protobufjs/package.json'),
  );
  const deps = join(ROOT, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
  const dirs = [
    ...['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(deps, d)),
    protobufDir,
  ];
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    if (protobuf.common[target]) return target;
    for (const dir of dirs) if (existsSync(join(dir, target))) return join(dir, target);
    return target;
  };
  root.loadSync(
    [
      'envoy/config/bootstrap/v3/bootstrap.proto',
      'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
      'envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto',
      'envoy/extensions/filters/http/router/v3/router.proto',
      'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
    ],
    { keepCase: true },
  );
  envoyRoot = root.resolveAll();
  return envoyRoot;
}

const SCALARS: Record<string, (v: unknown) => boolean> = {
  string: (v) => typeof v === 'string',
  bytes: (v) => typeof v === 'string',
  bool: (v) => typeof v === 'boolean',
};
const isNumberLike = (v: unknown): boolean =>
  typeof v === 'number' || (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v));

/** Every field of `config` checked against Envoy's Bootstrap message; problems as path: reason. */
function checkEnvoy(config: Obj): string[] {
  const root = loadEnvoyProtos();
  const problems: string[] = [];
  const isEnum = (t: PbType | PbEnum | null): t is PbEnum => !!t && 'values' in t;

  const checkMessage = (value: unknown, type: PbType, path: string): void => {
    const name = type.fullName.replace(/^\./, '');
    switch (name) {
      case 'google.protobuf.Duration':
        if (typeof value !== 'string' || !/^-?\d+(\.\d+)?s$/.test(value))
          problems.push(`${path}: not a duration`);
        return;
      case 'google.protobuf.Struct':
      case 'google.protobuf.Value':
      case 'google.protobuf.ListValue':
        return;
      case 'google.protobuf.BoolValue':
        if (typeof value !== 'boolean') problems.push(`${path}: not a bool`);
        return;
      case 'google.protobuf.StringValue':
        if (typeof value !== 'string') problems.push(`${path}: not a string`);
        return;
      case 'google.protobuf.UInt32Value':
      case 'google.protobuf.UInt64Value':
      case 'google.protobuf.Int32Value':
      case 'google.protobuf.Int64Value':
      case 'google.protobuf.DoubleValue':
      case 'google.protobuf.FloatValue':
        if (!isNumberLike(value)) problems.push(`${path}: not a number`);
        return;
    }
    if (!isObj(value)) {
      problems.push(`${path}: expected a ${name} message`);
      return;
    }
    if (name === 'google.protobuf.Any') {
      const url = value['@type'];
      if (typeof url !== 'string' || !url.startsWith('type.googleapis.com/')) {
        problems.push(`${path}: Any without a type.googleapis.com/ @type`);
        return;
      }
      let inner: PbType;
      try {
        inner = root.lookupType(url.slice('type.googleapis.com/'.length));
      } catch {
        problems.push(`${path}: unknown @type ${url}`);
        return;
      }
      const { '@type': _type, ...rest } = value;
      checkMessage(rest, inner, `${path}<${url.split('.').at(-1)}>`);
      return;
    }
    for (const [key, child] of Object.entries(value)) {
      const field = type.fields[key];
      const at = `${path}.${key}`;
      if (!field) {
        problems.push(`${at}: no such field in ${name}`);
        continue;
      }
      if (field.options?.deprecated === true) problems.push(`${at}: deprecated`);
      if (field.map) {
        if (!isObj(child)) problems.push(`${at}: expected a map`);
        else for (const [k, v] of Object.entries(child)) checkValue(v, field, `${at}[${k}]`);
      } else if (field.repeated) {
        if (!Array.isArray(child)) problems.push(`${at}: expected a list`);
        else child.forEach((v, i) => checkValue(v, field, `${at}[${i}]`));
      } else checkValue(child, field, at);
    }
    for (const oneof of type.oneofsArray) {
      const set = oneof.fieldsArray.filter((f) => f.name in value).map((f) => f.name);
      if (set.length > 1) problems.push(`${path}: ${set.join(' and ')} are one of ${oneof.name}`);
    }
  };

  const checkValue = (value: unknown, field: PbField, path: string): void => {
    const t = field.resolvedType;
    if (isEnum(t)) {
      if (!(typeof value === 'string' && value in t.values) && typeof value !== 'number')
        problems.push(`${path}: ${JSON.stringify(value)} is not a ${t.fullName} value`);
    } else if (t) checkMessage(value, t, path);
    else if (SCALARS[field.type]) {
      if (!SCALARS[field.type]!(value)) problems.push(`${path}: expected ${field.type}`);
    } else if (!isNumberLike(value)) problems.push(`${path}: expected ${field.type}`);
  };

  checkMessage(config, root.lookupType('envoy.config.bootstrap.v3.Bootstrap'), 'bootstrap');
  return problems;
}

// ------------------------------------------------------------------ Istio

describe('deploy/istio', () => {
  const mesh = obj(loadYaml(join(DEPLOY, 'istio', 'mesh-config.yaml'))[0], 'mesh-config');
  const providers = arr(at(mesh, 'spec', 'meshConfig', 'extensionProviders'), 'extensionProviders').map((p) =>
    obj(p, 'provider'),
  );
  const policy = obj(loadYaml(join(DEPLOY, 'istio', 'authorization-policy.yaml'))[0], 'authorization-policy');

  it('registers HTTP (8002) and gRPC (9191) providers for the ext-authz Service', () => {
    const http = providers.find((p) => p.envoyExtAuthzHttp);
    const grpc = providers.find((p) => p.envoyExtAuthzGrpc);
    ok(http && grpc, 'one envoyExtAuthzHttp and one envoyExtAuthzGrpc provider');
    const h = obj(http.envoyExtAuthzHttp, 'envoyExtAuthzHttp');
    assert.equal(h.port, 8002);
    ok(
      arr(h.includeRequestHeadersInCheck, 'includeRequestHeadersInCheck').includes('authorization'),
      'includeRequestHeadersInCheck must list authorization',
    );
    assert.deepEqual([...arr(h.headersToUpstreamOnAllow, 'headersToUpstreamOnAllow')].sort(), [
      'x-auth-jti',
      'x-user-id',
    ]);
    assert.equal(at(grpc, 'envoyExtAuthzGrpc', 'port'), 9191);
    for (const p of [h, obj(grpc.envoyExtAuthzGrpc, 'grpc')]) {
      assert.equal(
        str(p.service, 'service').split('.')[0],
        'ext-authz',
        'service host must be the ext-authz Service',
      );
      assert.notEqual(p.failOpen, true);
    }
    ok(
      ofKind('Service').some((s) => nameOf(s) === 'ext-authz'),
      'no ext-authz Service in deploy/k8s',
    );
  });

  it('AuthorizationPolicy: CUSTOM with a provider that exists, login and health excluded', () => {
    assert.equal(policy.apiVersion, 'security.istio.io/v1');
    assert.equal(policy.kind, 'AuthorizationPolicy');
    assert.equal(at(policy, 'spec', 'action'), 'CUSTOM');
    const provider = at(policy, 'spec', 'provider', 'name');
    ok(
      providers.some((p) => p.name === provider),
      `provider ${String(provider)} is not in mesh-config.yaml`,
    );
    const excluded = arr(at(policy, 'spec', 'rules'), 'rules').flatMap((r) =>
      arr(at(r, 'to'), 'to').flatMap((t) => (at(t, 'operation', 'notPaths') as unknown[] | undefined) ?? []),
    );
    for (const path of ['/api/v1/auth/login', '/healthz', '/readyz']) ok(excluded.includes(path), path);
    const selector = obj(at(policy, 'spec', 'selector', 'matchLabels'), 'selector');
    ok(
      deployments.some((d) => matches(selector, podLabels(d))),
      'the policy selects no cachecast workload',
    );
  });
});

// ------------------------------------------------------------------ Compose

describe('deploy/compose.yml', () => {
  const compose = obj(loadYaml(join(DEPLOY, 'compose.yml'))[0], 'compose');
  const services = obj(compose.services, 'services');
  const service = (name: string): Obj => obj(services[name], `service ${name}`);

  it('keeps the infrastructure services, with healthchecks and their CONTRACT ports', () => {
    for (const [name, port] of [
      ['rabbitmq', '127.0.0.1:5672:5672'],
      ['redis', '127.0.0.1:6379:6379'],
      ['postgres', '127.0.0.1:5432:5432'],
    ] as const) {
      ok(
        arr(at(service(name), 'healthcheck', 'test'), `${name} healthcheck`).length > 0,
        `${name} healthcheck`,
      );
      ok(arr(service(name).ports, `${name} ports`).includes(port), `${name} ${port}`);
    }
  });

  it('runs every service from the image built by deploy/Dockerfile, with `serve <service>`', () => {
    for (const [name, ports] of Object.entries(SERVICES)) {
      const s = service(name);
      assert.equal(JSON.stringify(s.command), JSON.stringify(['serve', name]), `${name} command`);
      const dockerfile = join(
        DEPLOY,
        str(at(s, 'build', 'context'), 'context'),
        str(at(s, 'build', 'dockerfile'), 'dockerfile'),
      );
      ok(existsSync(dockerfile), `${name}: ${dockerfile} does not exist`);
      ok(typeof s.image === 'string', `${name}: image`);
      assert.equal(s.entrypoint, undefined, `${name} must keep the image's entrypoint`);
      const env = obj(s.environment, `${name} environment`);
      assert.equal(Number(env.ADMIN_PORT), ports.ADMIN_PORT, `${name} ADMIN_PORT`);
      if (ports.PORT) assert.equal(Number(env.PORT), ports.PORT, `${name} PORT`);
      for (const key of ['RABBITMQ_URL', 'REDIS_URL', 'DATABASE_URL'])
        ok(!String(env[key]).includes('127.0.0.1'), `${name} ${key} must name the compose service`);
      const check = JSON.stringify(at(s, 'healthcheck', 'test'));
      ok(check.includes('/readyz'), `${name} healthcheck must use /readyz`);
      ok(!('<<' in s) && !('<<' in env), `${name}: a YAML merge key was not applied`);
    }
    ok(Number(at(service('ext-authz'), 'deploy', 'replicas')) >= 2, 'two ext-authz instances');
    // Signed events: one non-empty key shared by every publisher and consumer (and the import one-shot).
    const secret = obj(service('auth').environment, 'env').CACHE_EVENT_SECRET;
    assert.match(
      String(secret),
      /^\$\{CACHE_EVENT_SECRET:-[^}]{16,}\}$/,
      'CACHE_EVENT_SECRET: from the shell, else a 16+ character default (an empty one would mean unsigned)',
    );
    for (const name of [...Object.keys(SERVICES), 'migrate'])
      assert.equal(obj(service(name).environment, 'env').CACHE_EVENT_SECRET, secret, `${name} runs signed`);
    // The catalog verifies the callers of users' collections with the same key.
    for (const name of ['auth', 'ext-authz', 'catalog'])
      assert.equal(
        obj(service(name).environment, 'env').JWT_SECRET,
        obj(service('auth').environment, 'env').JWT_SECRET,
        `${name} shares JWT_SECRET with auth`,
      );
  });

  it('migrates and imports the sample catalog in a one-shot the services wait for', () => {
    const migrate = service('migrate');
    const script = JSON.stringify([migrate.entrypoint, migrate.command]);
    assert.match(script, /bin\/cachecast\.js migrate/);
    const imported = /bin\/cachecast\.js import (\S+?)\\?"?\s/.exec(script.replace(/\\n/g, '\n'));
    ok(imported, 'migrate runs an import');
    ok(existsSync(join(ROOT, imported[1]!)), `${imported[1]} does not exist`);
    assert.equal(String(migrate.restart), 'no');
    for (const name of ['catalog', 'match-worker'])
      assert.equal(
        at(service(name), 'depends_on', 'migrate', 'condition'),
        'service_completed_successfully',
        name,
      );
  });

  it('depends_on conditions name services that can satisfy them', () => {
    for (const [name, raw] of Object.entries(services)) {
      const deps = at(raw, 'depends_on');
      if (!deps) continue;
      for (const [dep, cond] of Object.entries(obj(deps, `${name} depends_on`))) {
        ok(dep in services, `${name} depends on unknown ${dep}`);
        const condition = at(cond, 'condition');
        ok(
          ['service_started', 'service_healthy', 'service_completed_successfully'].includes(
            String(condition),
          ),
          `${name} -> ${dep}: ${String(condition)}`,
        );
        if (condition === 'service_healthy')
          ok(at(services[dep], 'healthcheck'), `${dep} has no healthcheck`);
      }
    }
  });

  it('mounts Envoy configs that exist', () => {
    for (const volume of arr(service('envoy').volumes, 'envoy volumes')) {
      const source = str(volume, 'volume').split(':')[0]!;
      ok(existsSync(join(DEPLOY, source)), `${source} does not exist`);
    }
  });
});

// ------------------------------------------------------------------ Grafana

/** Every metric name the services register (names only: nothing is collected). */
function knownMetrics(): Set<string> {
  const registry = createMetricsRegistry(() => []);
  const extra = new Registry();
  registerCacheAsideMetrics(extra, {
    stats: () => {
      throw new Error('not collected');
    },
  });
  registerAuthzMetrics(extra, { counts: {} } as unknown as DecisionLog);
  const names = new Set([...registry.getMetricsAsArray(), ...extra.getMetricsAsArray()].map((m) => m.name));
  // Names written out in full (the match worker's).
  for (const file of filesUnder(join(ROOT, 'src')).filter((f) => f.endsWith('.ts')))
    for (const m of readFileSync(file, 'utf8').matchAll(/['"`](cachecast_[a-z0-9_]+)['"`]/g))
      names.add(m[1]!);
  return names;
}

describe('deploy/grafana/cachecast-dashboard.json', () => {
  const dashboard = obj(
    JSON.parse(readFileSync(join(DEPLOY, 'grafana', 'cachecast-dashboard.json'), 'utf8')),
    'dashboard',
  );
  const panels = arr(dashboard.panels, 'panels')
    .flatMap((p) => [p, ...((at(p, 'panels') as unknown[] | undefined) ?? [])])
    .map((p) => obj(p, 'panel'));
  const queryPanels = panels.filter((p) => p.type !== 'row');
  const exprs = queryPanels.flatMap((p) =>
    arr(p.targets, `${String(p.title)} targets`).map((t) => str(at(t, 'expr'), `${String(p.title)} expr`)),
  );

  it('is importable: schema version, a DS_PROMETHEUS input used by every panel, unique ids', () => {
    ok(Number(dashboard.schemaVersion) >= 36, `schemaVersion ${String(dashboard.schemaVersion)}`);
    ok(
      arr(dashboard.__inputs, '__inputs').some(
        (i) => at(i, 'name') === 'DS_PROMETHEUS' && at(i, 'pluginId') === 'prometheus',
      ),
      'no DS_PROMETHEUS input',
    );
    for (const p of queryPanels) {
      assert.equal(at(p, 'datasource', 'uid'), '${DS_PROMETHEUS}', String(p.title));
      ok(at(p, 'gridPos', 'w') && at(p, 'gridPos', 'h'), `${String(p.title)} gridPos`);
    }
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids repeat');
  });

  it('queries only metric names the services register (or the announced ones)', () => {
    const known = knownMetrics();
    const unknown = new Set<string>();
    for (const expr of exprs)
      for (const [name] of expr.matchAll(/\bcachecast_[a-zA-Z0-9_]+/g)) {
        const base = name.replace(/_(bucket|sum|count)$/, '');
        if (!known.has(name) && !known.has(base)) unknown.add(name);
      }
    assert.deepEqual([...unknown], []);
  });

  it('covers replicas, ext-authz, cache-aside, outbox and the match worker', () => {
    const all = exprs.join('\n');
    for (const needed of [
      'cachecast_replica_state',
      'cachecast_replica_version',
      'cachecast_replica_lag_ms',
      'cachecast_replica_events_applied_total',
      'cachecast_replica_events_rejected_total',
      'cachecast_replica_resyncs_total',
      'cachecast_replica_gaps_total',
      'cachecast_authz_decisions_total',
      'cachecast_cache_hits_total',
      'cachecast_cache_fallbacks_total',
      'cachecast_cache_breaker_open',
      'cachecast_outbox_pending',
      'cachecast_match_tasks_total',
    ])
      ok(all.includes(needed), `no panel uses ${needed}`);
    assert.match(
      all,
      /histogram_quantile\(0\.99, sum by \(le\) \(rate\(cachecast_authz_check_seconds_bucket/,
    );
    assert.match(all, /histogram_quantile\(0\.5, sum by \(le\) \(rate\(cachecast_authz_check_seconds_bucket/);
  });
});

// ------------------------------------------------------------------ Dockerfile

interface Instruction {
  op: string;
  args: string;
}

function dockerStages(): Instruction[][] {
  const text = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const stages: Instruction[][] = [];
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) continue;
    const [, op, args] = /^(\S+)\s*(.*)$/.exec(trimmed)!;
    const instruction = { op: op!.toUpperCase(), args: args! };
    if (instruction.op === 'FROM') stages.push([instruction]);
    else if (instruction.op !== 'ARG' || stages.length) stages.at(-1)?.push(instruction);
  }
  return stages;
}

describe('deploy/Dockerfile and .dockerignore', () => {
  const stages = dockerStages();
  const runtime = stages.at(-1)!;
  const all = stages.flat();

  it('is a multi-stage build: npm ci, build and prune in a build stage', () => {
    ok(stages.length >= 2, 'multi-stage');
    const build = stages[0]!.map((i) => `${i.op} ${i.args}`).join('\n');
    assert.match(build, /RUN npm ci/);
    assert.match(build, /npm run build/);
    assert.match(build, /npm prune --omit=dev/);
    ok(
      runtime.some((i) => i.op === 'COPY' && /--from=/.test(i.args)),
      'the runtime copies from the build',
    );
  });

  it('runs as a numeric non-root user, the one the Kubernetes manifests expect', () => {
    const user = runtime.filter((i) => i.op === 'USER').at(-1);
    ok(user, 'no USER in the final stage');
    const uid = user.args.split(':')[0]!;
    assert.match(uid, /^\d+$/, 'a numeric uid lets Kubernetes verify runAsNonRoot');
    assert.notEqual(Number(uid), 0);
    for (const d of deployments)
      assert.equal(String(at(d, 'spec', 'template', 'spec', 'securityContext', 'runAsUser')), uid, nameOf(d));
  });

  it('ships only dist, bin, node_modules, package.json and data; node bin/cachecast.js serve catalog', () => {
    for (const copy of runtime.filter((i) => i.op === 'COPY')) {
      const parts = copy.args.split(/\s+/).filter((p) => !p.startsWith('--'));
      for (const source of parts.slice(0, -1))
        ok(
          ['dist', 'bin', 'node_modules', 'package.json', 'data'].includes(basename(source)),
          `runtime copies ${source}`,
        );
    }
    const json = (op: string): unknown => JSON.parse(runtime.find((i) => i.op === op)!.args);
    assert.deepEqual(json('ENTRYPOINT'), ['node', 'bin/cachecast.js']);
    assert.deepEqual(json('CMD'), ['serve', 'catalog']);
    ok(!all.some((i) => i.op === 'HEALTHCHECK'), 'no HEALTHCHECK: the orchestrator probes');
    const exposed = new Set(
      runtime
        .filter((i) => i.op === 'EXPOSE')
        .flatMap((i) => i.args.split(/\s+/))
        .map(Number),
    );
    for (const ports of Object.values(SERVICES))
      for (const port of [ports.PORT, ports.ADMIN_PORT, ports.GRPC_PORT])
        if (port) ok(exposed.has(port), `EXPOSE ${port}`);
  });

  it('.dockerignore keeps every file the build copies from the context', () => {
    const patterns = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    const matchesPattern = (path: string, pattern: string): boolean => {
      const p = pattern.replace(/^\//, '').replace(/\/$/, '');
      ok(p === '*' || !/[*?[]/.test(p), `.dockerignore pattern ${pattern}: extend this matcher`);
      return p === '*' || path === p || path.startsWith(`${p}/`);
    };
    const ignored = (path: string): boolean => {
      let out = false;
      for (const pattern of patterns) {
        const negated = pattern.startsWith('!');
        if (matchesPattern(path, negated ? pattern.slice(1) : pattern)) out = !negated;
      }
      return out;
    };
    const sources = all
      .filter((i) => i.op === 'COPY' && !/--from=/.test(i.args))
      .flatMap((i) =>
        i.args
          .split(/\s+/)
          .filter((p) => !p.startsWith('--'))
          .slice(0, -1),
      );
    ok(sources.length > 0, 'the Dockerfile copies nothing from the context');
    for (const source of sources) {
      const path = source.replace(/^\.\//, '');
      ok(existsSync(join(ROOT, path)), `COPY ${source}: not in the repository`);
      ok(!ignored(path), `COPY ${source} is excluded by .dockerignore`);
    }
    for (const path of ['node_modules', 'dist', '.git', 'test'])
      ok(ignored(path), `${path} should be ignored`);
  });
});
