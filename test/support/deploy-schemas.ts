/**
 * Schemas (zod) for the fields of deploy/ files that braid relies on:
 * Kubernetes objects, the compose file, the GitHub composite action, the
 * GitLab template, the `--metadata-file` JSON, and a small systemd unit
 * parser. They are not the upstream schemas: they check what we use, and
 * refuse keys we misspell where a typo would silently do nothing.
 */
import { z } from 'zod';

const name = z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'a DNS-1123 name');
const labels = z.record(z.string(), z.string());

export const objectMeta = z.object({
  name,
  namespace: name.optional(),
  labels: labels.optional(),
  annotations: labels.optional(),
});

export const k8sObject = z.looseObject({
  apiVersion: z.string().min(1),
  kind: z.string().min(1),
  metadata: objectMeta,
});
export type K8sObject = z.infer<typeof k8sObject>;

const port = z.number().int().min(1).max(65535);

const containerPort = z.strictObject({
  name: z.string().max(15),
  containerPort: port,
  protocol: z.enum(['TCP', 'UDP']).optional(),
});

const httpProbe = z.strictObject({
  httpGet: z.strictObject({ path: z.string().startsWith('/'), port: z.union([port, z.string()]) }),
  initialDelaySeconds: z.number().int().optional(),
  periodSeconds: z.number().int().positive().optional(),
  timeoutSeconds: z.number().int().positive().optional(),
  failureThreshold: z.number().int().positive().optional(),
});

const envVar = z.strictObject({
  name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/),
  value: z.string().optional(),
  valueFrom: z
    .strictObject({
      fieldRef: z.strictObject({ fieldPath: z.string() }).optional(),
      secretKeyRef: z.strictObject({ name, key: z.string() }).optional(),
    })
    .optional(),
});

const volumeMount = z.strictObject({
  name,
  mountPath: z.string().startsWith('/'),
  readOnly: z.boolean().optional(),
});

const capabilities = z.strictObject({
  drop: z.array(z.string()),
  add: z.array(z.string()).optional(),
});

export const container = z.strictObject({
  name,
  image: z.string().min(1),
  args: z.array(z.string()).min(1),
  command: z.array(z.string()).optional(),
  env: z.array(envVar).optional(),
  ports: z.array(containerPort).optional(),
  livenessProbe: httpProbe.optional(),
  readinessProbe: httpProbe.optional(),
  startupProbe: httpProbe.optional(),
  resources: z.strictObject({ requests: labels.optional(), limits: labels.optional() }).optional(),
  securityContext: z
    .strictObject({
      allowPrivilegeEscalation: z.literal(false),
      readOnlyRootFilesystem: z.boolean(),
      capabilities,
      runAsNonRoot: z.boolean().optional(),
      runAsUser: z.number().int().optional(),
    })
    .optional(),
  volumeMounts: z.array(volumeMount).optional(),
});
export type Container = z.infer<typeof container>;

const volume = z.strictObject({
  name,
  emptyDir: z.strictObject({ sizeLimit: z.string().optional() }).optional(),
  hostPath: z.strictObject({ path: z.string().startsWith('/'), type: z.string() }).optional(),
  secret: z
    .strictObject({
      secretName: name,
      defaultMode: z.number().int().optional(),
      optional: z.boolean().optional(),
      items: z.array(z.strictObject({ key: z.string(), path: z.string() })).optional(),
    })
    .optional(),
});

export const podSpec = z.strictObject({
  nodeSelector: labels.optional(),
  terminationGracePeriodSeconds: z.number().int().positive(),
  securityContext: z.strictObject({
    runAsNonRoot: z.boolean().optional(),
    runAsUser: z.number().int(),
    runAsGroup: z.number().int(),
    fsGroup: z.number().int().optional(),
    supplementalGroups: z.array(z.number().int()).optional(),
    seccompProfile: z.strictObject({ type: z.literal('RuntimeDefault') }),
  }),
  containers: z.array(container).length(1),
  volumes: z.array(volume).optional(),
});

const podTemplate = z.strictObject({
  metadata: z.strictObject({ labels }),
  spec: podSpec,
});

const selector = z.strictObject({ matchLabels: labels });

export const statefulSet = k8sObject.extend({
  apiVersion: z.literal('apps/v1'),
  kind: z.literal('StatefulSet'),
  spec: z.strictObject({
    serviceName: name,
    replicas: z.literal(1),
    selector,
    template: podTemplate,
    volumeClaimTemplates: z
      .array(
        z.strictObject({
          metadata: z.strictObject({ name }),
          spec: z.strictObject({
            accessModes: z.array(z.literal('ReadWriteOnce')),
            storageClassName: z.string().optional(),
            resources: z.strictObject({ requests: z.strictObject({ storage: z.string() }) }),
          }),
        }),
      )
      .min(1),
  }),
});

/** The coordinators of deploy/kubernetes-ha: replicas on one PostgreSQL store, nothing on a volume. */
export const deployment = k8sObject.extend({
  apiVersion: z.literal('apps/v1'),
  kind: z.literal('Deployment'),
  spec: z.strictObject({
    replicas: z.number().int().min(2),
    strategy: z.strictObject({
      type: z.literal('RollingUpdate'),
      rollingUpdate: z.strictObject({
        maxSurge: z.union([z.number(), z.string()]),
        maxUnavailable: z.union([z.number(), z.string()]),
      }),
    }),
    selector,
    template: podTemplate,
  }),
});

export const daemonSet = k8sObject.extend({
  apiVersion: z.literal('apps/v1'),
  kind: z.literal('DaemonSet'),
  spec: z.strictObject({
    selector,
    updateStrategy: z
      .strictObject({
        type: z.literal('RollingUpdate'),
        rollingUpdate: z.strictObject({ maxUnavailable: z.union([z.number(), z.string()]) }),
      })
      .optional(),
    template: podTemplate,
  }),
});

export const service = k8sObject.extend({
  apiVersion: z.literal('v1'),
  kind: z.literal('Service'),
  spec: z.strictObject({
    type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer']).optional(),
    clusterIP: z.string().optional(),
    publishNotReadyAddresses: z.boolean().optional(),
    selector: labels,
    ports: z
      .array(
        z.strictObject({
          name: z.string(),
          port,
          targetPort: z.union([port, z.string()]),
          protocol: z.literal('TCP').optional(),
          appProtocol: z.string().optional(),
        }),
      )
      .min(1),
  }),
});

export const namespace = k8sObject.extend({
  apiVersion: z.literal('v1'),
  kind: z.literal('Namespace'),
});

export const kustomization = z.strictObject({
  apiVersion: z.literal('kustomize.config.k8s.io/v1beta1'),
  kind: z.literal('Kustomization'),
  namespace: name,
  labels: z.array(z.strictObject({ pairs: labels })).optional(),
  resources: z.array(z.string()).min(1),
  /** Inline strategic-merge patches (the HA overlay deletes the base's StatefulSet). */
  patches: z.array(z.strictObject({ patch: z.string().min(1) })).optional(),
  images: z
    .array(z.strictObject({ name: z.string(), newName: z.string(), newTag: z.string() }))
    .optional(),
});

const composeCommand = z.array(z.string()).min(1);

export const composeFile = z.looseObject({
  name: z.string(),
  services: z.record(
    z.string(),
    z.strictObject({
      image: z.string().min(1),
      build: z.strictObject({ context: z.string(), dockerfile: z.string() }).optional(),
      network_mode: z.literal('host'),
      command: composeCommand.optional(),
      environment: z.record(z.string(), z.string()).optional(),
      volumes: z.array(z.string()).optional(),
      group_add: z.array(z.string()).optional(),
      healthcheck: z
        .strictObject({
          test: z.array(z.string()).min(2),
          interval: z.string(),
          timeout: z.string(),
          retries: z.number().int(),
          start_period: z.string().optional(),
        })
        .optional(),
      depends_on: z
        .record(
          z.string(),
          z.strictObject({ condition: z.enum(['service_started', 'service_healthy']) }),
        )
        .optional(),
      stop_signal: z.literal('SIGTERM').optional(),
      stop_grace_period: z.string().optional(),
      restart: z.enum(['no', 'always', 'on-failure', 'unless-stopped']),
    }),
  ),
  volumes: z.record(z.string(), z.null()).optional(),
});

const inputName = z.string().regex(/^[a-z][a-z0-9-]*$/);

export const compositeAction = z.strictObject({
  name: z.string().min(1),
  description: z.string().min(1),
  inputs: z.record(
    inputName,
    z.strictObject({
      description: z.string().min(1),
      required: z.boolean(),
      default: z.string().optional(),
    }),
  ),
  outputs: z.record(
    inputName,
    z.strictObject({ description: z.string().min(1), value: z.string() }),
  ),
  runs: z.strictObject({
    using: z.literal('composite'),
    steps: z
      .array(
        z.strictObject({
          name: z.string(),
          id: z.string().optional(),
          if: z.string().optional(),
          shell: z.literal('bash'),
          env: z.record(z.string(), z.string()).optional(),
          run: z.string().min(1),
        }),
      )
      .min(1),
  }),
  branding: z.strictObject({ icon: z.string(), color: z.string() }).optional(),
});
export type CompositeAction = z.infer<typeof compositeAction>;

export const gitlabTemplate = z.record(
  z.string().startsWith('.'),
  z.strictObject({
    image: z.strictObject({ name: z.string(), entrypoint: z.array(z.string()) }),
    variables: z.record(z.string(), z.string()),
    script: z.array(z.string()).min(1),
    artifacts: z.strictObject({
      paths: z.array(z.string()),
      reports: z.strictObject({ dotenv: z.string() }),
    }),
  }),
);

const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/);

/** The `--metadata-file` JSON as docs/ci.md describes it. */
export const buildMetadata = z.strictObject({
  'image.name': z.string().min(1),
  'containerimage.digest': digest,
  'containerimage.descriptor': z.strictObject({
    mediaType: z.enum([
      'application/vnd.oci.image.index.v1+json',
      'application/vnd.docker.distribution.manifest.list.v2+json',
    ]),
    digest,
    size: z.number().int().positive(),
  }),
  'braid.build.id': z.string().min(1),
  'braid.request.id': z.string().regex(/^[0-9a-f]{16}$/),
  platforms: z
    .array(
      z.strictObject({
        platform: z.string().regex(/^[a-z0-9]+\/[a-z0-9]+(\/[a-z0-9]+)?$/),
        digest: digest.nullable(),
        agent: z.string(),
        emulated: z.boolean(),
        durationMs: z.number().int().nonnegative().nullable(),
        // The platform's provenance attestation manifest (null with --provenance=false).
        attestation: digest.nullable(),
      }),
    )
    .min(1),
});

/** A systemd unit file: section -> key -> values in order (a key may repeat). */
export type UnitFile = Map<string, Map<string, string[]>>;

/** Parses unit-file syntax: `[Section]`, `Key=value`, `#`/`;` comments, `\` continuations. */
export function parseUnitFile(text: string): UnitFile {
  const unit: UnitFile = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.replace(/\\\n/g, ' ').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const heading = /^\[([A-Za-z]+)\]$/.exec(line);
    if (heading) {
      section = new Map();
      unit.set(heading[1] ?? '', section);
      continue;
    }
    const pair = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (!pair || !section) throw new Error(`not a unit-file line: ${raw}`);
    const key = pair[1] ?? '';
    section.set(key, [...(section.get(key) ?? []), (pair[2] ?? '').trim()]);
  }
  return unit;
}

/** The last value of `section.key` (systemd's rule for single-valued settings). */
export function unitValue(unit: UnitFile, section: string, key: string): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

/** `90s`, `10min`, `1min 30s`, `45` (seconds) -> milliseconds. */
export function systemdSeconds(value: string): number {
  const units: Record<string, number> = {
    ms: 1,
    s: 1000,
    sec: 1000,
    min: 60_000,
    m: 60_000,
    h: 3_600_000,
  };
  let total = 0;
  for (const part of value.trim().split(/\s+/)) {
    const match = /^(\d+)([a-z]*)$/.exec(part);
    const unit = units[match?.[2] || 's'];
    if (!match || unit === undefined) throw new Error(`not a systemd time span: ${value}`);
    total += Number(match[1]) * unit;
  }
  return total;
}
