/**
 * deploy/ and docs/ci.md, checked so they cannot rot: every YAML file
 * parses and matches a schema of the fields braid relies on, the objects
 * agree with each other (images, ports, probes, secrets, architectures),
 * the systemd units pass `systemd-analyze verify` and `security`, every
 * flag and BRAID_* variable they use exists in the real CLI, the CI
 * templates' scripts really build on a farm with TLS and tokens, and
 * deploy/Dockerfile really builds and runs on the local engine.
 */
import {
  chmod,
  cp,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { DockerEngine } from '../../src/agent/engine-docker.js';
import { EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE } from '../../src/cli/exit.js';
import { packContext } from '../../src/cli/context.js';
import { agentSettings, coordinatorSettings } from '../../src/config/settings.js';
import { BASE_PLATFORMS, pushBaseImage } from '../support/base-image.js';
import {
  BRAID_BIN,
  braid,
  startTestCoordinator,
  type TestCoordinator,
} from '../support/braid-cli.js';
import {
  flagOfVariable,
  resolveCommand,
  shellInvocations,
  unknownFlags,
  commandHelp,
  type Invocation,
} from '../support/cli-flags.js';
import { DOCKER_SOCKET, requireCommand, requireEngine } from '../support/components.js';
import {
  buildMetadata,
  composeFile,
  compositeAction,
  daemonSet,
  deployment,
  gitlabTemplate,
  k8sObject,
  kustomization,
  namespace,
  parseUnitFile,
  service,
  statefulSet,
  systemdSeconds,
  unitValue,
  type Container,
  type K8sObject,
  type UnitFile,
} from '../support/deploy-schemas.js';
import { startTestAgent, type TestAgent } from '../support/farm.js';
import {
  hostArchitecture,
  loadHostNodeImages,
  type HostNodeImages,
} from '../support/node-image.js';
import { run, startProcess, type Started } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { filesUnder } from '../support/files.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const ARCHES = ['amd64', 'arm64', 'ppc64le', 's390x'] as const;
const VERSION = (
  JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }
).version;
const DEFAULTS = {
  shutdownGraceMs: coordinatorSettings({ HOME: '/nonexistent' }).shutdownGraceMs(undefined),
  drainGraceMs: agentSettings({ HOME: '/nonexistent' }).drainGraceMs(undefined),
};

const rel = (path: string): string => relative(ROOT, path);
const text = (path: string): Promise<string> => readFile(path, 'utf8');

/** zod's verdict as a readable failure naming the file. */
function check<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const result = schema.safeParse(value);
  if (!result.success) {
    const issues = result.error.issues
      .map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`)
      .join('; ');
    throw new Error(`${where}: ${issues}`);
  }
  return result.data;
}

/** The value after `flag` in an argument list (`--listen 0.0.0.0:7465`). */
function argValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

function portOf(address: string | undefined): number {
  const match = /:(\d+)$/.exec(address ?? '');
  if (!match) throw new Error(`no port in address ${address}`);
  return Number(match[1]);
}

/** Image references braid's own image goes by in deploy/: `braid:V`, `REGISTRY/braid:V`. */
function braidImageTag(image: string): string | undefined {
  const match = /(?:^|\/)braid:([^/@]+)$/.exec(image);
  return match?.[1];
}

interface Manifests {
  objects: { file: string; object: K8sObject }[];
  kustomization: z.infer<typeof kustomization>;
  /** deploy/kubernetes-ha: its own objects (the overlay's additions) and its kustomization. */
  haObjects: { file: string; object: K8sObject }[];
  haKustomization: z.infer<typeof kustomization>;
  compose: z.infer<typeof composeFile>;
  composeHa: z.infer<typeof composeFile>;
  action: z.infer<typeof compositeAction>;
  gitlab: z.infer<typeof gitlabTemplate>;
}

let manifests: Manifests;
let yamlFiles: string[];

beforeAll(async () => {
  yamlFiles = (await filesUnder(DEPLOY)).filter((f) => /\.ya?ml$/.test(f));
  const objects: Manifests['objects'] = [];
  const haObjects: Manifests['haObjects'] = [];
  let kust: unknown;
  let haKust: unknown;
  let compose: unknown;
  let composeHa: unknown;
  let action: unknown;
  let gitlab: unknown;
  for (const file of yamlFiles) {
    // Compose files use merge keys (`<<: *anchor`), as Docker Compose does.
    const docs = parseAllDocuments(await text(file), { merge: true });
    for (const doc of docs) {
      if (doc.errors.length > 0) {
        throw new Error(`${rel(file)}: ${doc.errors.map((e) => e.message).join('; ')}`);
      }
    }
    const values = docs.map((d) => d.toJS() as unknown).filter((v) => v !== null);
    const where = rel(file);
    if (where === 'deploy/kubernetes/kustomization.yaml') kust = values[0];
    else if (where.startsWith('deploy/kubernetes/')) {
      for (const value of values)
        objects.push({ file: where, object: check(k8sObject, value, where) });
    } else if (where === 'deploy/kubernetes-ha/kustomization.yaml') haKust = values[0];
    else if (where.startsWith('deploy/kubernetes-ha/')) {
      for (const value of values)
        haObjects.push({ file: where, object: check(k8sObject, value, where) });
    } else if (where === 'deploy/compose/compose.yaml') compose = values[0];
    else if (where === 'deploy/compose/compose-ha.yaml') composeHa = values[0];
    else if (where === 'deploy/ci/github/action.yml') action = values[0];
    else if (where === 'deploy/ci/gitlab/braid.gitlab-ci.yml') gitlab = values[0];
    else throw new Error(`${where}: no schema for this file; add one to this test`);
  }
  manifests = {
    objects,
    kustomization: check(kustomization, kust, 'deploy/kubernetes/kustomization.yaml'),
    haObjects,
    haKustomization: check(kustomization, haKust, 'deploy/kubernetes-ha/kustomization.yaml'),
    compose: check(composeFile, compose, 'deploy/compose/compose.yaml'),
    composeHa: check(composeFile, composeHa, 'deploy/compose/compose-ha.yaml'),
    action: check(compositeAction, action, 'deploy/ci/github/action.yml'),
    gitlab: check(gitlabTemplate, gitlab, 'deploy/ci/gitlab/braid.gitlab-ci.yml'),
  };
});

function objectsOf<T>(kind: string, schema: z.ZodType<T>): { file: string; object: T }[] {
  return manifests.objects
    .filter((o) => o.object.kind === kind)
    .map((o) => ({ file: o.file, object: check(schema, o.object, `${o.file} ${kind}`) }));
}

describe('deploy/ YAML: parsed and checked against schemas of the fields braid uses', () => {
  it('finds the Kubernetes, compose and CI files, and every Kubernetes object has apiVersion, kind and metadata.name', () => {
    expect(yamlFiles.map(rel)).toEqual(
      expect.arrayContaining([
        'deploy/compose/compose.yaml',
        'deploy/compose/compose-ha.yaml',
        'deploy/kubernetes-ha/kustomization.yaml',
        'deploy/ci/github/action.yml',
        'deploy/ci/gitlab/braid.gitlab-ci.yml',
        'deploy/kubernetes/kustomization.yaml',
      ]),
    );
    const kinds = manifests.objects.map((o) => o.object.kind).sort();
    expect(kinds).toEqual([
      'DaemonSet',
      'DaemonSet',
      'DaemonSet',
      'DaemonSet',
      'Namespace',
      'Service',
      'Service',
      'StatefulSet',
    ]);
    for (const { file, object } of manifests.objects) {
      const known = {
        Namespace: namespace,
        Service: service,
        StatefulSet: statefulSet,
        DaemonSet: daemonSet,
      };
      const schema = known[object.kind as keyof typeof known] as z.ZodType | undefined;
      if (!schema) throw new Error(`${file}: no schema for kind ${object.kind}`);
      check(schema, object, `${file} ${object.kind} ${object.metadata.name}`);
    }
  });

  it('the kustomization lists every Kubernetes file, and its namespace is the Namespace object', async () => {
    const listed = [...manifests.kustomization.resources].sort();
    const present = (await readdir(join(DEPLOY, 'kubernetes')))
      .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml')
      .sort();
    expect(listed).toEqual(present);
    const [ns] = objectsOf('Namespace', namespace);
    expect(ns?.object.metadata.name).toBe(manifests.kustomization.namespace);
  });

  it("braid's image is the same version everywhere, and that is package.json's", () => {
    const images: { where: string; image: string }[] = [];
    for (const { file, object } of [...manifests.objects, ...manifests.haObjects]) {
      const spec = (object as { spec?: { template?: { spec?: { containers?: Container[] } } } })
        .spec;
      for (const c of spec?.template?.spec?.containers ?? [])
        images.push({ where: file, image: c.image });
    }
    for (const job of Object.values(manifests.gitlab)) {
      images.push({ where: 'deploy/ci/gitlab/braid.gitlab-ci.yml', image: job.image.name });
    }
    for (const kust of [manifests.kustomization, manifests.haKustomization]) {
      for (const image of kust.images ?? []) {
        if (image.name === 'braid') {
          images.push({ where: 'kustomization newTag', image: `${image.newName}:${image.newTag}` });
        }
      }
    }
    expect(images.length).toBeGreaterThanOrEqual(9);
    for (const { where, image } of images) {
      expect(braidImageTag(image), `${where}: ${image}`).toBe(VERSION);
    }
  });
});

describe('deploy/kubernetes: the objects agree with each other', () => {
  it('one agent DaemonSet per architecture, each selecting its kubernetes.io/arch and mounting the engine socket', () => {
    const sets = objectsOf('DaemonSet', daemonSet);
    const arches = sets.map(
      (s) => s.object.spec.template.spec.nodeSelector?.['kubernetes.io/arch'],
    );
    expect(arches.sort()).toEqual([...ARCHES].sort());
    const [svc] = objectsOf('Service', service).filter((s) => s.object.spec.clusterIP !== 'None');
    const grpc = svc?.object.spec.ports.find((p) => p.name === 'grpc');
    for (const { file, object } of sets) {
      const arch = object.spec.template.spec.nodeSelector?.['kubernetes.io/arch'] ?? '';
      const where = `${file} ${object.metadata.name}`;
      expect(object.metadata.name, where).toBe(`braid-agent-${arch}`);
      expect(object.spec.template.spec.nodeSelector?.['kubernetes.io/os'], where).toBe('linux');
      // The selector picks the template's pods and no other DaemonSet's.
      for (const [k, v] of Object.entries(object.spec.selector.matchLabels)) {
        expect(object.spec.template.metadata.labels[k], `${where} label ${k}`).toBe(v);
      }
      expect(Object.values(object.spec.selector.matchLabels).join(' ')).toContain(arch);
      const pod = object.spec.template.spec;
      const agent = pod.containers[0] as Container;
      expect(agent.args[0], where).toBe('agent');
      const socket = pod.volumes?.find((v) => v.hostPath?.path === '/var/run/docker.sock');
      expect(socket?.hostPath?.type, where).toBe('Socket');
      expect(agent.volumeMounts?.find((m) => m.name === socket?.name)?.mountPath, where).toBe(
        '/var/run/docker.sock',
      );
      const token = agent.env?.find((e) => e.name === 'BRAID_JOIN_TOKEN');
      expect(token?.valueFrom?.secretKeyRef, `${where}: join token from a Secret`).toBeDefined();
      expect(agent.args, where).not.toContain('--join-token');
      // It dials the Service's gRPC port by the Service's cluster name.
      expect(argValue(agent.args, '--coordinator'), where).toBe(
        `${svc?.object.metadata.name}.${manifests.kustomization.namespace}.svc:${grpc?.port}`,
      );
      // Draining agents get their grace period before Kubernetes kills them.
      expect(pod.terminationGracePeriodSeconds * 1000, where).toBeGreaterThan(
        DEFAULTS.drainGraceMs,
      );
      // A read-only root file system needs a writable /tmp.
      expect(
        agent.volumeMounts?.some((m) => m.mountPath === '/tmp'),
        where,
      ).toBe(true);
    }
  });

  it('the coordinator StatefulSet, its Services and its probes agree on ports, names and volumes', () => {
    const [set] = objectsOf('StatefulSet', statefulSet);
    if (!set) throw new Error('no StatefulSet');
    const services = objectsOf('Service', service).map((s) => s.object);
    const pod = set.object.spec.template;
    const coordinator = pod.spec.containers[0] as Container;
    expect(coordinator.args[0]).toBe('coordinator');
    const ports = new Map((coordinator.ports ?? []).map((p) => [p.name, p.containerPort]));
    expect(ports.get('grpc')).toBe(portOf(argValue(coordinator.args, '--listen')));
    expect(ports.get('metrics')).toBe(portOf(argValue(coordinator.args, '--metrics-listen')));
    // Probes: the metrics listener's /healthz and /readyz, by port name.
    expect(coordinator.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(coordinator.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(coordinator.startupProbe?.httpGet.port).toBe('metrics');
    // Every Service selects the pods and targets a named container port with the same number.
    for (const svc of services) {
      for (const [k, v] of Object.entries(svc.spec.selector)) {
        expect(pod.metadata.labels[k], `${svc.metadata.name} selector ${k}`).toBe(v);
      }
      for (const p of svc.spec.ports) {
        expect(ports.get(String(p.targetPort)), `${svc.metadata.name} port ${p.name}`).toBe(p.port);
      }
    }
    const headless = services.find((s) => s.metadata.name === set.object.spec.serviceName);
    expect(headless?.spec.clusterIP).toBe('None');
    // The data dir is the claimed volume.
    const claim = set.object.spec.volumeClaimTemplates[0]?.metadata.name;
    expect(coordinator.volumeMounts?.find((m) => m.name === claim)?.mountPath).toBe(
      argValue(coordinator.args, '--data-dir'),
    );
    // TLS files come from the mounted Secret.
    const tls = pod.spec.volumes?.find((v) => v.secret?.secretName === 'braid-coordinator-tls');
    const tlsDir = coordinator.volumeMounts?.find((m) => m.name === tls?.name)?.mountPath;
    expect(dirname(argValue(coordinator.args, '--tls-cert') ?? '')).toBe(tlsDir);
    expect(dirname(argValue(coordinator.args, '--tls-key') ?? '')).toBe(tlsDir);
    expect(pod.spec.securityContext.runAsNonRoot).toBe(true);
    expect(pod.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(DEFAULTS.shutdownGraceMs);
  });

  it('every Secret the manifests need is made by a command in deploy/README.md', async () => {
    const readme = await text(join(DEPLOY, 'README.md'));
    const secrets = new Set<string>();
    for (const { object } of [...manifests.objects, ...manifests.haObjects]) {
      const walk = (value: unknown): void => {
        if (Array.isArray(value)) value.forEach(walk);
        else if (value && typeof value === 'object') {
          const record = value as Record<string, unknown>;
          if (typeof record.secretName === 'string') secrets.add(record.secretName);
          const ref = record.secretKeyRef as { name?: string } | undefined;
          if (ref?.name) secrets.add(ref.name);
          Object.values(record).forEach(walk);
        }
      };
      walk(object);
    }
    expect([...secrets].sort()).toEqual([
      'braid-ca',
      'braid-coordinator-tls',
      'braid-join-token',
      'braid-registry-auth',
      'braid-store',
      'braid-store-ca',
    ]);
    for (const name of secrets) {
      expect(readme, `deploy/README.md creates Secret ${name}`).toMatch(
        new RegExp(`kubectl -n braid create secret [a-z-]+ ${name}\\b`),
      );
    }
  });
});

describe('deploy/compose/compose.yaml: a one-box farm', () => {
  it('the agent dials the coordinator, the health check asks its /readyz, the socket and its group are passed', async () => {
    const { services } = manifests.compose;
    expect(Object.keys(services).sort()).toEqual(['agent', 'coordinator', 'registry']);
    const coordinator = services.coordinator?.command ?? [];
    const agent = services.agent?.command ?? [];
    expect(coordinator[0]).toBe('coordinator');
    expect(agent[0]).toBe('agent');
    expect(argValue(agent, '--coordinator')).toBe(argValue(coordinator, '--listen'));
    const health = services.coordinator?.healthcheck?.test.join(' ') ?? '';
    expect(health).toContain(`http://${argValue(coordinator, '--metrics-listen')}/readyz`);
    expect(services.agent?.depends_on?.coordinator?.condition).toBe('service_healthy');
    expect(services.agent?.volumes).toContain('/var/run/docker.sock:/var/run/docker.sock');
    expect(services.agent?.group_add?.[0]).toMatch(/^\$\{DOCKER_GID:\?/);
    expect(systemdSeconds(services.agent?.stop_grace_period ?? '0')).toBeGreaterThan(
      DEFAULTS.drainGraceMs,
    );
    expect(systemdSeconds(services.coordinator?.stop_grace_period ?? '0')).toBeGreaterThan(
      DEFAULTS.shutdownGraceMs,
    );
    // Both braid services build deploy/Dockerfile from the repository root.
    for (const name of ['coordinator', 'agent']) {
      const build = services[name]?.build;
      expect(build, name).toBeDefined();
      await stat(join(DEPLOY, 'compose', build?.context ?? '', build?.dockerfile ?? ''));
    }
  });
});

describe('deploy/kubernetes-ha: two coordinators on PostgreSQL, as an overlay of deploy/kubernetes', () => {
  /** The overlay's objects as kustomize renders them: the base's, less those deleted, plus its own. */
  function rendered(): { file: string; object: K8sObject }[] {
    const deleted = (manifests.haKustomization.patches ?? []).map(({ patch }) => {
      const doc = parseAllDocuments(patch)[0]?.toJS() as
        { $patch?: string; kind?: string; metadata?: { name?: string } } | undefined;
      expect(doc?.$patch, patch).toBe('delete');
      return `${doc?.kind}/${doc?.metadata?.name}`;
    });
    const base = manifests.objects.filter(
      (o) => !deleted.includes(`${o.object.kind}/${o.object.metadata.name}`),
    );
    // Every patch deletes an object the base has.
    expect(manifests.objects.length - base.length).toBe(deleted.length);
    return [...base, ...manifests.haObjects];
  }

  it('builds on the base and lists every file of its own; the StatefulSet gives way to a Deployment', async () => {
    const kust = manifests.haKustomization;
    expect(kust.namespace).toBe(manifests.kustomization.namespace);
    const present = (await readdir(join(DEPLOY, 'kubernetes-ha')))
      .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml')
      .sort();
    expect([...kust.resources].sort()).toEqual(['../kubernetes', ...present].sort());
    expect(
      rendered()
        .map((o) => o.object.kind)
        .sort(),
    ).toEqual([
      'DaemonSet',
      'DaemonSet',
      'DaemonSet',
      'DaemonSet',
      'Deployment',
      'Namespace',
      'Service',
    ]);
  });

  it('runs 2 coordinators on the store from a Secret, Ready only as the leader, found through the Service by everyone', () => {
    const objects = rendered();
    const [set] = manifests.haObjects
      .filter((o) => o.object.kind === 'Deployment')
      .map((o) => check(deployment, o.object, `${o.file} Deployment`));
    if (!set) throw new Error('no Deployment in deploy/kubernetes-ha');
    expect(set.spec.replicas).toBe(2);
    // A standby is never Ready: a rollout that waited for it would never end.
    expect(set.spec.strategy.rollingUpdate.maxUnavailable).toBe('100%');
    const pod = set.spec.template;
    const coordinator = pod.spec.containers[0] as Container;
    const where = 'deploy/kubernetes-ha Deployment';
    expect(coordinator.args[0], where).toBe('coordinator');
    // The store's URL (and its password) comes from a Secret, never from the arguments.
    expect(coordinator.args.some((a) => a.startsWith('postgres'))).toBe(false);
    expect(coordinator.args).not.toContain('--store');
    const store = coordinator.env?.find((e) => e.name === 'BRAID_STORE');
    expect(store?.valueFrom?.secretKeyRef).toEqual({ name: 'braid-store', key: 'url' });
    // Readiness is the leader's alone (a standby's /readyz is 503); liveness holds for both.
    expect(coordinator.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(coordinator.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(coordinator.startupProbe?.httpGet.path).toBe('/healthz');
    const ports = new Map((coordinator.ports ?? []).map((p) => [p.name, p.containerPort]));
    expect(ports.get('grpc')).toBe(portOf(argValue(coordinator.args, '--listen')));
    expect(ports.get('metrics')).toBe(portOf(argValue(coordinator.args, '--metrics-listen')));
    // The one Service selects these pods, on the same ports.
    const services = objects.filter((o) => o.object.kind === 'Service');
    expect(services).toHaveLength(1);
    const svc = check(service, services[0]?.object, 'Service').spec;
    for (const [k, v] of Object.entries(svc.selector)) {
      expect(pod.metadata.labels[k], `selector ${k}`).toBe(v);
    }
    for (const [k, v] of Object.entries(set.spec.selector.matchLabels)) {
      expect(pod.metadata.labels[k], `Deployment selector ${k}`).toBe(v);
    }
    for (const p of svc.ports) expect(ports.get(String(p.targetPort)), p.name).toBe(p.port);
    // A standby names the Service as the leader; the agents of the base dial the same.
    const grpc = svc.ports.find((p) => p.name === 'grpc');
    const serviceAddress = `${services[0]?.object.metadata.name}.${manifests.haKustomization.namespace}.svc:${grpc?.port}`;
    expect(argValue(coordinator.args, '--advertise')).toBe(serviceAddress);
    for (const { object } of objects.filter((o) => o.object.kind === 'DaemonSet')) {
      const agent = check(daemonSet, object, 'DaemonSet').spec.template.spec
        .containers[0] as Container;
      expect(argValue(agent.args, '--coordinator'), object.metadata.name).toBe(serviceAddress);
    }
    // Nothing on a volume: the data dir and /tmp (uploads spooled) are the pod's own.
    const volumes = new Map((pod.spec.volumes ?? []).map((v) => [v.name, v]));
    const mountOf = (path: string | undefined) =>
      coordinator.volumeMounts?.find((m) => m.mountPath === path)?.name ?? '';
    expect(volumes.get(mountOf(argValue(coordinator.args, '--data-dir')))?.emptyDir).toBeDefined();
    expect(volumes.get(mountOf('/tmp'))?.emptyDir).toBeDefined();
    const tls = pod.spec.volumes?.find((v) => v.secret?.secretName === 'braid-coordinator-tls');
    const tlsDir = coordinator.volumeMounts?.find((m) => m.name === tls?.name)?.mountPath;
    expect(dirname(argValue(coordinator.args, '--tls-cert') ?? '')).toBe(tlsDir);
    expect(pod.spec.securityContext.runAsNonRoot).toBe(true);
    expect(pod.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(DEFAULTS.shutdownGraceMs);
  });
});

describe('deploy/compose/compose-ha.yaml: two coordinators on PostgreSQL', () => {
  it('both coordinators use the store without a password in the URL, advertise what they listen on, and the agent knows both', () => {
    const { services } = manifests.composeHa;
    expect(Object.keys(services).sort()).toEqual([
      'agent',
      'coordinator-a',
      'coordinator-b',
      'postgres',
      'registry',
    ]);
    const postgres = services.postgres;
    const pgPort = (postgres?.command ?? []).find((a) => a.startsWith('port='))?.slice(5);
    expect(pgPort).toBeDefined();
    expect(postgres?.healthcheck?.test).toContain('pg_isready');
    const listens: string[] = [];
    const metrics: string[] = [];
    for (const name of ['coordinator-a', 'coordinator-b']) {
      const svc = services[name];
      const command = svc?.command ?? [];
      expect(command[0], name).toBe('coordinator');
      const url = argValue(command, '--store') ?? '';
      expect(url, name).toBe(`postgres://braid@127.0.0.1:${pgPort}/braid?sslmode=disable`);
      // The password reaches PostgreSQL's client from the environment, as PGPASSWORD.
      expect(svc?.environment?.PGPASSWORD, name).toMatch(/^\$\{BRAID_PG_PASSWORD:\?/);
      expect(postgres?.environment?.POSTGRES_PASSWORD).toBe(svc?.environment?.PGPASSWORD);
      expect(argValue(command, '--advertise'), name).toBe(argValue(command, '--listen'));
      listens.push(argValue(command, '--listen') ?? '');
      metrics.push(argValue(command, '--metrics-listen') ?? '');
      // /healthz: a standby's /readyz is 503, and the agent waits for both.
      const health = svc?.healthcheck?.test.join(' ') ?? '';
      expect(health, name).toContain(`http://${argValue(command, '--metrics-listen')}/healthz`);
      expect(svc?.depends_on?.postgres?.condition, name).toBe('service_healthy');
      expect(services.agent?.depends_on?.[name]?.condition).toBe('service_healthy');
      expect(systemdSeconds(svc?.stop_grace_period ?? '0')).toBeGreaterThan(
        DEFAULTS.shutdownGraceMs,
      );
    }
    expect(new Set(listens).size).toBe(2);
    expect(new Set(metrics).size).toBe(2);
    expect(argValue(services.agent?.command ?? [], '--coordinator')).toBe(listens.join(','));
    expect(services.agent?.group_add?.[0]).toMatch(/^\$\{DOCKER_GID:\?/);
  });
});

describe('deploy/ci: the GitHub composite action and the GitLab template', () => {
  it('the action has the documented inputs and outputs, and its steps only read declared inputs', () => {
    const { action } = manifests;
    expect(Object.keys(action.inputs).sort()).toEqual(
      [
        'braid',
        'build-args',
        'context',
        'coordinator',
        'file',
        'install',
        'metadata-file',
        'platforms',
        'tags',
        'tls-ca',
        'token',
      ].sort(),
    );
    const required = Object.entries(action.inputs).filter(([, i]) => i.required);
    expect(required.map(([n]) => n).sort()).toEqual(['coordinator', 'tags', 'token']);
    for (const step of action.runs.steps) {
      const exprs = [step.if ?? '', ...Object.values(step.env ?? {}), step.run].join('\n');
      for (const [, input] of exprs.matchAll(/inputs\.([a-z0-9-]+)/g)) {
        expect(Object.keys(action.inputs), `step "${step.name}" reads inputs.${input}`).toContain(
          input,
        );
      }
      // Inputs reach scripts through env only (no ${{ }} inside run: script injection).
      expect(step.run, step.name).not.toContain('${{');
    }
    const build = action.runs.steps.find((s) => s.id === 'build');
    for (const [name, output] of Object.entries(action.outputs)) {
      expect(output.value).toBe(`\${{ steps.build.outputs.${name} }}`);
      expect(build?.run, `the build step writes ${name}=`).toContain(`\`${name}=`);
    }
  });

  it('the GitLab template publishes the digest for later jobs', () => {
    const [job] = Object.values(manifests.gitlab);
    expect(job?.artifacts.reports.dotenv).toBe('braid.env');
    expect(job?.script.join('\n')).toContain('IMAGE_DIGEST=');
    expect(job?.image.entrypoint).toEqual(['']);
  });
});

async function unitFiles(): Promise<{ file: string; unit: UnitFile }[]> {
  const files = (await filesUnder(join(DEPLOY, 'systemd'))).filter((f) => f.endsWith('.service'));
  return Promise.all(files.map(async (file) => ({ file, unit: parseUnitFile(await text(file)) })));
}

describe('deploy/systemd: the units', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'braid-units-'));
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('pass systemd-analyze verify and score OK in systemd-analyze security (offline)', async () => {
    const analyze = await requireCommand('systemd-analyze', 'systemd');
    const units = await unitFiles();
    expect(units.map((u) => basename(u.file)).sort()).toEqual([
      'braid-agent.service',
      'braid-coordinator.service',
    ]);
    // verify insists that ExecStart's binary exists: point it at this checkout's.
    const copies: string[] = [];
    for (const { file } of units) {
      const copy = join(work, basename(file));
      await writeFile(copy, (await text(file)).replaceAll('/usr/local/bin/braid', BRAID_BIN));
      copies.push(copy);
    }
    const verify = await run(analyze, ['verify', ...copies]);
    expect({ code: verify.code, stderr: verify.stderr }).toEqual({ code: 0, stderr: '' });
    for (const copy of copies) {
      // Exposure 0-10 (shown); the threshold is in tenths: 20 = "2.0 OK".
      const security = await run(analyze, ['security', '--offline=true', '--threshold=20', copy]);
      expect(security.code, `${basename(copy)}:\n${security.stdout.slice(-600)}`).toBe(0);
    }
  });

  it('sandbox the services, run them as their own users, and give a drain its time', async () => {
    const sysusers = await text(join(DEPLOY, 'systemd', 'braid.sysusers'));
    for (const { file, unit } of await unitFiles()) {
      const where = rel(file);
      const get = (key: string): string | undefined => unitValue(unit, 'Service', key);
      const command = basename(file, '.service').replace(/^braid-/, '');
      expect(get('ExecStart'), where).toBe(`/usr/local/bin/braid ${command}`);
      const user = get('User') ?? '';
      expect(user, where).toMatch(/^braid/);
      expect(sysusers, `${where}: braid.sysusers makes ${user}`).toMatch(
        new RegExp(`^u\\s+${user}\\s`, 'm'),
      );
      for (const [key, value] of Object.entries({
        NoNewPrivileges: 'yes',
        ProtectSystem: 'strict',
        ProtectHome: 'yes',
        PrivateTmp: 'yes',
        KillSignal: 'SIGTERM',
        Restart: 'on-failure',
        RestartPreventExitStatus: String(EXIT_USAGE),
      })) {
        expect(get(key), `${where} ${key}`).toBe(value);
      }
      expect(get('RestrictAddressFamilies')?.split(/\s+/), where).toContain('AF_UNIX');
      expect(get('StateDirectory'), where).toBe(user);
      expect(get('MemoryDenyWriteExecute'), `${where}: V8 needs W+X memory`).toBeUndefined();
      const env = get('EnvironmentFile')?.replace(/^-/, '') ?? '';
      await stat(join(DEPLOY, 'systemd', `${basename(env, '.env')}.env.example`));
      const grace = command === 'agent' ? DEFAULTS.drainGraceMs : DEFAULTS.shutdownGraceMs;
      expect(systemdSeconds(get('TimeoutStopSec') ?? '0'), where).toBeGreaterThan(grace);
    }
    const agent = (await unitFiles()).find((u) => u.file.endsWith('braid-agent.service'))?.unit;
    if (!agent) throw new Error('no agent unit');
    expect(unitValue(agent, 'Service', 'SupplementaryGroups')).toBe('docker');
    // A bind mount of the socket would go stale when dockerd restarts.
    expect(agent.get('Service')?.get('ReadWritePaths') ?? []).not.toContainEqual(
      expect.stringContaining('docker.sock'),
    );
    expect(unitValue(agent, 'Unit', 'After')).toContain('docker.service');
  });
});

/** Where a BRAID_* variable is set, and the command that reads it. */
interface VariableUse {
  where: string;
  command: string[];
  name: string;
}

async function variableUses(): Promise<VariableUse[]> {
  const uses: VariableUse[] = [];
  const fromText = (where: string, command: string[], body: string): void => {
    for (const [, name] of body.matchAll(/\b(BRAID_[A-Z0-9_]+)=/g)) {
      uses.push({ where, command, name: name ?? '' });
    }
  };
  for (const name of ['coordinator', 'agent']) {
    fromText(
      `deploy/systemd/braid-${name}.service`,
      [name],
      await text(join(DEPLOY, 'systemd', `braid-${name}.service`)),
    );
    fromText(
      `deploy/systemd/${name}.env.example`,
      [name],
      await text(join(DEPLOY, 'systemd', `${name}.env.example`)),
    );
  }
  for (const { file, object } of manifests.objects) {
    const spec = (object as { spec?: { template?: { spec?: { containers?: Container[] } } } }).spec;
    for (const c of spec?.template?.spec?.containers ?? []) {
      for (const e of c.env ?? []) {
        if (e.name.startsWith('BRAID_'))
          uses.push({ where: file, command: [c.args[0] ?? ''], name: e.name });
      }
    }
  }
  for (const step of manifests.action.runs.steps) {
    for (const name of Object.keys(step.env ?? {})) {
      if (name.startsWith('BRAID_'))
        uses.push({ where: 'deploy/ci/github/action.yml', command: ['build'], name });
    }
    fromText('deploy/ci/github/action.yml', ['build'], step.run.replace(/export /g, ''));
  }
  const gitlab = await text(join(DEPLOY, 'ci', 'gitlab', 'braid.gitlab-ci.yml'));
  for (const [, name] of gitlab.matchAll(/\b(BRAID_[A-Z0-9_]+)\b/g)) {
    uses.push({
      where: 'deploy/ci/gitlab/braid.gitlab-ci.yml',
      command: ['build'],
      name: name ?? '',
    });
  }
  const ci = await text(join(ROOT, 'docs', 'ci.md'));
  // `secrets.BRAID_CA_PEM`, `vars.BRAID_COORDINATOR`: names in a CI's store, not variables braid reads.
  for (const [, name] of ci.matchAll(/(?<![.\w])(BRAID_[A-Z0-9_]+)\b/g)) {
    uses.push({ where: 'docs/ci.md', command: ['build'], name: name ?? '' });
  }
  return uses;
}

describe('every flag and BRAID_* variable in deploy/ and docs/ci.md exists in the real CLI', () => {
  it('command lines in deploy/ files and docs/ci.md', async () => {
    const invocations: Invocation[] = [];
    for (const file of [...(await filesUnder(DEPLOY)), join(ROOT, 'docs', 'ci.md')]) {
      invocations.push(...shellInvocations(await text(file), rel(file)));
    }
    const argLists: Invocation[] = [];
    for (const { file, object } of [...manifests.objects, ...manifests.haObjects]) {
      const spec = (object as { spec?: { template?: { spec?: { containers?: Container[] } } } })
        .spec;
      for (const c of spec?.template?.spec?.containers ?? [])
        argLists.push({ where: file, words: c.args });
    }
    for (const [file, compose] of [
      ['deploy/compose/compose.yaml', manifests.compose],
      ['deploy/compose/compose-ha.yaml', manifests.composeHa],
    ] as const) {
      for (const [name, svc] of Object.entries(compose.services)) {
        if (svc.command && name !== 'postgres')
          argLists.push({ where: `${file} ${name}`, words: svc.command });
      }
    }
    // The CI scripts assemble `braid build` arguments in a list: every --flag in them is one of build's.
    const build = manifests.action.runs.steps.find((s) => s.id === 'build')?.run ?? '';
    const gitlab = Object.values(manifests.gitlab)
      .flatMap((job) => job.script)
      .join('\n');
    for (const [where, script] of [
      ['deploy/ci/github/action.yml', build],
      ['deploy/ci/gitlab/braid.gitlab-ci.yml', gitlab],
    ] as const) {
      argLists.push({
        where,
        words: ['build', ...[...script.matchAll(/(?<![\w-])--[a-z][a-z-]*/g)].map((m) => m[0])],
      });
    }
    const problems: string[] = [];
    const checked: Invocation[] = [];
    for (const invocation of [...invocations, ...argLists]) {
      const { help, rest } = await resolveCommand(invocation.words);
      // Prose ("the braid agent ..."), `kubectl -n braid ...`: not a braid command line.
      if (help.path === '') continue;
      checked.push(invocation);
      for (const flag of unknownFlags(help, rest)) {
        problems.push(`${invocation.where}: braid ${help.path} has no ${flag}`);
      }
    }
    // Structured argument lists must name a command.
    for (const list of argLists) {
      if (!checked.includes(list))
        problems.push(`${list.where}: braid ${list.words.join(' ')}: no such command`);
    }
    // The files that show braid command lines are read as such.
    for (const where of [
      'deploy/Dockerfile',
      'deploy/README.md',
      'docs/ci.md',
      'deploy/systemd/braid-agent.service',
    ]) {
      expect(checked.filter((i) => i.where === where).length, where).toBeGreaterThan(0);
    }
    expect(problems).toEqual([]);
  });

  it("BRAID_* variables set for a command are that command's settings", async () => {
    const problems: string[] = [];
    const uses = await variableUses();
    expect(uses.length).toBeGreaterThan(10);
    for (const use of uses) {
      const help = await commandHelp(use.command);
      if (!flagOfVariable(use.name).some((f) => help.flags.has(f))) {
        problems.push(
          `${use.where}: ${use.name} is not a setting of braid ${use.command.join(' ')}`,
        );
      }
    }
    expect(problems).toEqual([]);
  });
});

describe('docs/ci.md', () => {
  it("lists exactly the CLI's exit codes, as the README does", async () => {
    const codesIn = (markdown: string, heading: RegExp): number[] => {
      const start = markdown.search(heading);
      expect(start, String(heading)).toBeGreaterThanOrEqual(0);
      const table = markdown.slice(start).split('\n\n').slice(0, 3).join('\n');
      return [...table.matchAll(/^\| (\d+) \|/gm)].map((m) => Number(m[1]));
    };
    const expected = [EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED];
    expect(codesIn(await text(join(ROOT, 'docs', 'ci.md')), /^## Exit codes/m)).toEqual(expected);
    expect(codesIn(await text(join(ROOT, 'README.md')), /^### Exit codes/m)).toEqual(expected);
  });

  it('shows a --metadata-file example that has the shape this test checks real files against', async () => {
    const ci = await text(join(ROOT, 'docs', 'ci.md'));
    const example = /## The metadata file[\s\S]*?```json\n([\s\S]*?)```/.exec(ci)?.[1];
    check(buildMetadata, JSON.parse(example ?? 'null'), 'docs/ci.md metadata example');
  });
});

/** The GitHub runner's way of running a `shell: bash` step: the command, its arguments and environment. */
async function actionStepCommand(
  step: z.infer<typeof compositeAction>['runs']['steps'][number],
  inputs: Record<string, string>,
  env: Record<string, string>,
  dir: string,
): Promise<{ command: string; args: string[]; env: NodeJS.ProcessEnv }> {
  const stepEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries(step.env ?? {})) {
    const input = /^\$\{\{ inputs\.([a-z0-9-]+) \}\}$/.exec(value)?.[1];
    if (!input) throw new Error(`env ${key}: not a plain input reference: ${value}`);
    stepEnv[key] = inputs[input] ?? manifests.action.inputs[input]?.default ?? '';
  }
  const script = join(dir, `step-${step.id ?? 'x'}-${Math.random().toString(16).slice(2)}.sh`);
  await writeFile(script, step.run);
  return {
    command: await requireCommand('bash', 'bash'),
    args: ['--noprofile', '--norc', '-eo', 'pipefail', script],
    env: { PATH: process.env.PATH ?? '', HOME: dir, ...env, ...stepEnv },
  };
}

async function runActionStep(...args: Parameters<typeof actionStepCommand>) {
  const { command, args: argv, env } = await actionStepCommand(...args);
  return run(command, argv, { env, timeoutMs: 300_000 });
}

/** Waits (bounded) until `text()` matches, or the process ends. */
async function waitForOutput(
  started: Started,
  text: () => string,
  pattern: RegExp,
  timeoutMs: number,
): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  let ended = false;
  void started.exited.then(() => (ended = true));
  while (Date.now() < deadline) {
    const match = pattern.exec(text());
    if (match) return match;
    if (ended) throw new Error(`exited before printing ${pattern}: ${text().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`did not print ${pattern} within ${timeoutMs} ms: ${text().slice(-2000)}`);
}

/** HEAD of a tag in the test registry: the digest it points at, or undefined. */
async function tagDigest(
  registry: TestRegistry,
  repository: string,
  tag: string,
): Promise<string | undefined> {
  const res = await fetch(`${registry.url}/v2/${repository}/manifests/${tag}`, {
    method: 'HEAD',
    headers: {
      accept:
        'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json',
    },
  });
  return res.status === 200 ? (res.headers.get('docker-content-digest') ?? undefined) : undefined;
}

const DOCKERFILE = 'ARG BASE\nFROM ${BASE}\nARG GREETING\nRUN echo "$GREETING" > /greeting\n';

describe('the CI templates build on a real farm (TLS, API and join tokens, plain progress)', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agent: TestAgent;
  let dir: string;
  let context: string;
  let base: string;
  let ca: string;
  let apiToken: string;
  let shimDir: string;
  const platform = `linux/${hostArchitecture().oci}`;
  const clientEnv = (): Record<string, string> => ({
    BRAID_COORDINATOR: coordinator.address,
    BRAID_TOKEN: apiToken,
    BRAID_TLS_CA: ca,
  });

  beforeAll(async () => {
    await requireEngine();
    await requireCommand('openssl', 'openssl');
    registry = await startRegistry();
    const hostBase = BASE_PLATFORMS.filter((p) => p.architecture === hostArchitecture().oci);
    await pushBaseImage(registry.host, 'braid-test/busybox', 'latest', { platforms: hostBase });
    base = `${registry.host}/braid-test/busybox:latest`;
    dir = await mkdtemp(join(tmpdir(), 'braid-ci-'));
    const certs = join(dir, 'certs');
    const made = await braid(['certs', 'init', '--dir', certs]);
    expect(made.code, made.stderr).toBe(0);
    ca = join(certs, 'ca.pem');
    coordinator = await startTestCoordinator('127.0.0.1:0', [
      '--require-auth',
      '--tls-cert',
      join(certs, 'server.pem'),
      '--tls-key',
      join(certs, 'server-key.pem'),
    ]);
    const token = async (kind: string): Promise<string> => {
      const result = await braid([
        'tokens',
        'create',
        '--kind',
        kind,
        '--name',
        `ci-${kind}`,
        '--data-dir',
        coordinator.dataDir,
      ]);
      expect(result.code, result.stderr).toBe(0);
      return result.stdout.trim();
    };
    apiToken = await token('api');
    agent = await startTestAgent(coordinator.address, 'ci-agent', ['--tls-ca', ca], {
      BRAID_JOIN_TOKEN: await token('join'),
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const listed = await braid(['agents', '--output', 'json'], { env: clientEnv() });
      if (listed.code === 0 && listed.stdout.includes('"ci-agent"')) break;
      if (Date.now() > deadline)
        throw new Error(
          `agent did not join: ${listed.stderr}${agent.process.stderr().slice(-2000)}`,
        );
      await new Promise((r) => setTimeout(r, 250));
    }
    context = join(dir, 'app');
    await mkdir(context);
    await writeFile(join(context, 'Dockerfile'), DOCKERFILE);
    // `braid` on PATH, as an installed one would be.
    shimDir = join(dir, 'bin');
    await mkdir(shimDir);
    await writeFile(
      join(shimDir, 'braid'),
      `#!/bin/sh\nexec "${process.execPath}" "${BRAID_BIN}" "$@"\n`,
    );
    await chmod(join(shimDir, 'braid'), 0o755);
  }, 180_000);
  afterAll(async () => {
    await agent?.stop();
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the GitHub action: builds, pushes every tag, outputs the digest; stdout is the digest, stderr plain progress', async () => {
    const build = manifests.action.runs.steps.find((s) => s.id === 'build');
    if (!build) throw new Error('no build step');
    const runnerTemp = join(dir, 'runner-temp');
    await mkdir(runnerTemp);
    const output = join(dir, 'github-output');
    await writeFile(output, '');
    const result = await runActionStep(
      build,
      {
        coordinator: coordinator.address,
        token: apiToken,
        'tls-ca': await text(ca),
        context,
        tags: `${registry.host}/ci/gh:1, ${registry.host}/ci/gh:latest\n`,
        platforms: `${platform}\n`,
        'build-args': `BASE=${base}\nGREETING=hello, from ci\n`,
        braid: join(shimDir, 'braid'),
      },
      { RUNNER_TEMP: runnerTemp, GITHUB_OUTPUT: output, GITHUB_RUN_ID: '42' },
      dir,
    );
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    const outputs = Object.fromEntries(
      (await text(output))
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(outputs.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(result.stdout).toBe(`${outputs.digest}\n`);
    expect(await tagDigest(registry, 'ci/gh', '1')).toBe(outputs.digest);
    expect(await tagDigest(registry, 'ci/gh', 'latest')).toBe(outputs.digest);
    expect(outputs['metadata-file']).toBe(join(runnerTemp, 'braid-metadata-42.json'));
    const metadata = check(
      buildMetadata,
      JSON.parse(await text(outputs['metadata-file'] ?? '')),
      'metadata',
    );
    expect(metadata['containerimage.digest']).toBe(outputs.digest);
    expect(metadata['braid.build.id']).toBe(outputs['build-id']);
    expect(metadata['image.name']).toBe(`${registry.host}/ci/gh:1,${registry.host}/ci/gh:latest`);
    expect(metadata.platforms.map((p) => [p.platform, p.agent, p.emulated])).toEqual([
      [platform, 'ci-agent', false],
    ]);
    // Not a terminal: plain lines, no escape sequences.
    expect(result.stderr).toMatch(new RegExp(`^\\[${platform.replace('/', '\\/')}\\] `, 'm'));
    expect(result.stderr).toMatch(/^\[build\] succeeded sha256:/m);
    expect(result.stderr).not.toContain('\u001b[');
    // The CA came in as PEM text and went to a file.
    expect((await text(join(runnerTemp, 'braid-ca.pem'))).trim()).toBe((await text(ca)).trim());
  });

  it('the GitLab template: builds with a File-type CA variable and writes IMAGE_DIGEST for later jobs', async () => {
    const [job] = Object.values(manifests.gitlab);
    if (!job) throw new Error('no job');
    const project = join(dir, 'gitlab-project');
    await cp(context, project, { recursive: true });
    await writeFile(join(project, 'script.sh'), job.script.join('\n'));
    // GitLab runs the script in the project directory; the script writes its files there.
    const result = await run('/bin/sh', ['-c', 'cd "$0" && exec /bin/sh ./script.sh', project], {
      env: {
        PATH: `${shimDir}:${process.env.PATH ?? ''}`,
        HOME: dir,
        ...job.variables,
        ...clientEnv(),
        IMAGE_TAGS: `${registry.host}/ci/gl:1\n${registry.host}/ci/gl:2`,
        IMAGE_PLATFORMS: platform,
        BUILD_CONTEXT: '.',
        BUILD_ARGS: `BASE=${base}\nGREETING=hello from gitlab`,
      },
      timeoutMs: 300_000,
    });
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    const dotenv = await text(join(project, 'braid.env'));
    check(buildMetadata, JSON.parse(await text(join(project, 'braid-metadata.json'))), 'metadata');
    const digest = /^IMAGE_DIGEST=(sha256:[0-9a-f]{64})$/m.exec(dotenv)?.[1];
    expect(digest).toBeDefined();
    expect(dotenv).toMatch(/^IMAGE_BUILD_ID=\S+$/m);
    expect(await tagDigest(registry, 'ci/gl', '1')).toBe(digest);
    expect(await tagDigest(registry, 'ci/gl', '2')).toBe(digest);
  });

  it('a failing build exits 1 naming the platform, writes no metadata file and moves no tag', async () => {
    const broken = join(dir, 'broken');
    await mkdir(broken);
    await writeFile(
      join(broken, 'Dockerfile'),
      'ARG BASE\nFROM ${BASE}\nRUN echo doomed; exit 3\n',
    );
    const metadataFile = join(dir, 'broken-metadata.json');
    const result = await braid(
      [
        'build',
        broken,
        '-t',
        `${registry.host}/ci/broken:1`,
        '--platform',
        platform,
        '--build-arg',
        `BASE=${base}`,
        '--metadata-file',
        metadataFile,
      ],
      { env: clientEnv(), timeoutMs: 300_000 },
    );
    expect(result.code).toBe(EXIT_FAILED);
    expect(result.stdout).toBe('');
    expect(result.stderr.trim().split('\n').at(-1)).toMatch(
      new RegExp(`^braid: build \\S+ failed on ${platform}`),
    );
    await expect(stat(metadataFile)).rejects.toThrow(/ENOENT/);
    expect(await tagDigest(registry, 'ci/broken', '1')).toBeUndefined();
  });

  /** Starts a CI script on a slow build, signals the script's shell as the runner would, and checks the build was cancelled. */
  async function cancelViaShell(
    start: (slow: string, tag: string) => Promise<Started>,
    signal: NodeJS.Signals,
  ): Promise<void> {
    const slow = await mkdtemp(join(dir, 'slow-'));
    const marker = Math.random().toString(16).slice(2);
    await writeFile(
      join(slow, 'Dockerfile'),
      `ARG BASE\nFROM \${BASE}\nRUN echo ${marker} && sleep 300\n`,
    );
    const tag = `${registry.host}/ci/cancelled:${marker}`;
    const shell = await start(slow, tag);
    try {
      const [, buildId] = await waitForOutput(shell, shell.stderr, /^build (\S+):/m, 60_000);
      await waitForOutput(shell, shell.stderr, new RegExp(`RUN echo ${marker}`), 120_000);
      // The runner signals the step's shell only, not its process group.
      process.kill(shell.pid, signal);
      const exit = await Promise.race([
        shell.exited,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 120_000)),
      ]);
      expect(exit, `the script ended after ${signal}: ${shell.stderr().slice(-2000)}`).toEqual({
        code: EXIT_FAILED,
        signal: null,
      });
      expect(shell.stderr()).toContain(`cancelling build ${buildId}`);
      const status = await braid(['status', buildId ?? '', '--output', 'json'], {
        env: clientEnv(),
      });
      // status exits 1 for a cancelled build, as braid logs does.
      expect(status.code, status.stderr).toBe(EXIT_FAILED);
      expect((JSON.parse(status.stdout) as { state: string }).state).toBe('cancelled');
      expect(await tagDigest(registry, 'ci/cancelled', marker)).toBeUndefined();
    } finally {
      await shell.stop('SIGKILL', 5_000);
    }
  }

  it("a cancelled GitHub run (SIGINT to the step's bash) cancels the build", async () => {
    const build = manifests.action.runs.steps.find((s) => s.id === 'build');
    if (!build) throw new Error('no build step');
    await cancelViaShell(async (slow, tag) => {
      const runnerTemp = await mkdtemp(join(dir, 'runner-temp-'));
      const { command, args, env } = await actionStepCommand(
        build,
        {
          coordinator: coordinator.address,
          token: apiToken,
          'tls-ca': await text(ca),
          context: slow,
          tags: tag,
          platforms: platform,
          'build-args': `BASE=${base}`,
          braid: join(shimDir, 'braid'),
        },
        { RUNNER_TEMP: runnerTemp, GITHUB_OUTPUT: join(runnerTemp, 'output'), GITHUB_RUN_ID: '7' },
        dir,
      );
      return startProcess(command, args, { env });
    }, 'SIGINT');
  });

  it("a cancelled GitLab job (SIGTERM to the script's shell) cancels the build", async () => {
    const [job] = Object.values(manifests.gitlab);
    if (!job) throw new Error('no job');
    await cancelViaShell(async (slow, tag) => {
      await writeFile(join(slow, 'script.sh'), job.script.join('\n'));
      return startProcess('/bin/sh', ['-c', 'cd "$0" && exec /bin/sh ./script.sh', slow], {
        env: {
          PATH: `${shimDir}:${process.env.PATH ?? ''}`,
          HOME: dir,
          ...job.variables,
          ...clientEnv(),
          IMAGE_TAGS: tag,
          IMAGE_PLATFORMS: platform,
          BUILD_ARGS: `BASE=${base}`,
        },
      });
    }, 'SIGTERM');
  });

  it('bad usage exits 2 with one line and submits nothing', async () => {
    const count = async (): Promise<number> => {
      const listed = await braid(['builds', '--output', 'json'], { env: clientEnv() });
      expect(listed.code, listed.stderr).toBe(0);
      return listed.stdout.split('\n').filter(Boolean).length;
    };
    const before = await count();
    const result = await braid(['build', context, '--platform', platform], { env: clientEnv() });
    expect(result.code).toBe(EXIT_USAGE);
    expect(result.stderr).toBe('braid: no tag given: use -t REGISTRY/REPO:TAG\n');
    expect(await count()).toBe(before);
  });
});

describe('deploy/Dockerfile builds with BuildKit on the local engine and its image runs braid', () => {
  let docker: Docker;
  let images: HostNodeImages | undefined;
  let imageId: string | undefined;
  let dir: string;

  beforeAll(async () => {
    await requireEngine();
    docker = new Docker({ socketPath: DOCKER_SOCKET });
    dir = await mkdtemp(join(tmpdir(), 'braid-self-'));
  });
  afterAll(async () => {
    if (imageId)
      await docker
        .getImage(imageId)
        .remove({ force: true })
        .catch(() => undefined);
    await images?.remove();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("builds braid's own image from a clean copy of this checkout, with base images made from this machine", async () => {
    images = await loadHostNodeImages(docker, ROOT);
    // A clean checkout: tracked and untracked-but-not-ignored files, no node_modules/ or dist/.
    const checkout = join(dir, 'checkout');
    const listed = execFileSync(
      'git',
      ['ls-files', '-z', '--cached', '--others', '--exclude-standard'],
      {
        cwd: ROOT,
        encoding: 'utf8',
      },
    );
    for (const file of listed.split('\0').filter(Boolean)) {
      await mkdir(dirname(join(checkout, file)), { recursive: true });
      // A file deleted in the working tree but still in the index is not part of the checkout.
      await cp(join(ROOT, file), join(checkout, file)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
    const packed = await packContext(checkout, {
      dockerfile: join(checkout, 'deploy', 'Dockerfile'),
      maxBytes: 256 * 1024 * 1024,
    });
    const engine = new DockerEngine({ url: `unix://${DOCKER_SOCKET}`, socketPath: DOCKER_SOCKET });
    try {
      const built = await engine.build(
        {
          context: createReadStream(packed.path),
          dockerfile: packed.dockerfileInContext,
          platform: `linux/${hostArchitecture().oci}`,
          buildArgs: { BUILD_IMAGE: images.build, NODE_IMAGE: images.runtime },
          labels: { 'io.braid.test': 'deploy-dockerfile' },
          noCache: false,
          pull: false,
          networkMode: 'none',
        },
        () => undefined,
        AbortSignal.timeout(600_000),
      );
      imageId = built.imageId;
    } catch (err) {
      const tail = (err as { logTail?: string[] }).logTail ?? [];
      if (tail.some((line) => line.includes('ENOTCACHED'))) {
        throw new Error(
          `this machine's npm cache lacks packages of package-lock.json (the test image installs offline from it); run: npm ci\n${tail.join('\n')}`,
        );
      }
      throw err;
    } finally {
      await packed.cleanup();
    }
    const config = (await docker.getImage(imageId).inspect()).Config;
    expect(config.User).toBe('10001:10001');
    expect(config.Entrypoint).toEqual(['braid']);

    const inImage = async (args: string[]): Promise<{ code: number; out: string }> => {
      const container = await docker.createContainer({
        Image: imageId,
        Cmd: args,
        HostConfig: { NetworkMode: 'none' },
        Labels: { 'io.braid.test': 'deploy-dockerfile' },
      });
      try {
        await container.start();
        const { StatusCode } = (await container.wait()) as { StatusCode: number };
        const logs = await container.logs({ stdout: true, stderr: true });
        // Multiplexed frames: 8-byte headers before each chunk.
        const chunks: Buffer[] = [];
        for (let i = 0; i + 8 <= logs.length;) {
          const size = logs.readUInt32BE(i + 4);
          chunks.push(logs.subarray(i + 8, i + 8 + size));
          i += 8 + size;
        }
        return { code: StatusCode, out: Buffer.concat(chunks).toString('utf8') };
      } finally {
        await container.remove({ force: true });
      }
    };
    const version = await inImage(['version', '--client-only']);
    expect(version).toEqual({
      code: 0,
      out: expect.stringMatching(new RegExp(`^client\\s+${VERSION.replace(/\./g, '\\.')}\\n$`)),
    });
    // As uid 10001 in its state directory: SQLite (the native addon) works.
    const token = await inImage([
      'tokens',
      'create',
      '--kind',
      'api',
      '--data-dir',
      '/var/lib/braid',
    ]);
    expect(token.code, token.out).toBe(0);
    expect(token.out).toMatch(/^braid_api_[a-z2-7]{52}$/m);
  }, 900_000);
});
