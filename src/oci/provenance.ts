/**
 * SLSA provenance as in-toto statements: the one braid writes for each
 * platform it builds (reading any image's back is provenance-reader.ts).
 *
 * braid's statement follows BuildKit's SLSA v1 layout (moby/buildkit
 * docs/attestations/slsa-definitions.md) wherever BuildKit has a field, so
 * tools that read buildx's provenance read braid's. Its `buildType` is
 * BRAID_BUILD_TYPE, whose shape is this file's ProvenancePredicate type:
 *
 * - `externalParameters.configSource`: the build context as BuildKit names a
 *   remote one (`uri`, `digest`) and the Dockerfile `path` in it;
 *   `externalParameters.request`: BuildKit's `frontend`, `args`
 *   (`build-arg:K`, `label:K`, `target`, `no-cache`, `force-network-mode`,
 *   `add-hosts`), `secrets` and `ssh` (ids only, never values); braid adds
 *   `dockerfile` (path and digest), `platforms` and `tags` as requested.
 * - `internalParameters`: BuildKit's `builderPlatform` (and, in max mode,
 *   `buildConfig` with `llbDefinition` steps and `digestMapping`), flattened
 *   beside braid's own keys as BuildKit flattens its custom environment:
 *   `braidVersion`, `coordinator`, `agent` {name, host}, `engine` {id,
 *   version}, `kernel`, `emulated`, `qemu` {handler, version}, `attempt`.
 *   A max-mode step is {id, name, inputs, cached, startedOn, finishedOn,
 *   durationMs, error}; its `inputs` name other steps (`stepN`).
 * - `resolvedDependencies`: base images as BuildKit's package URLs
 *   (`pkg:docker/alpine@3.20?platform=linux%2Farm64`) with their digests,
 *   then the context.
 * - `runDetails.metadata`: `invocationId` (the build id), `startedOn`,
 *   `finishedOn` of the job; `braid_requestId` and `braid_jobId` extensions.
 *
 * The bytes are deterministic (fixed key order, maps sorted, Go's escaping)
 * and bounded: MAX_STATEMENT_BYTES in all, MAX_STRING_CHARS per string.
 */
import { createHash } from 'node:crypto';
import { BraidError, type ErrorCode } from '../errors.js';
import { isValidDigest } from './digest.js';
import { formatPlatform, type Platform } from './platform.js';
import { familiarReference, parseReference } from './reference.js';

export const IN_TOTO_STATEMENT_V1 = 'https://in-toto.io/Statement/v1';
export const SLSA_PROVENANCE_V1 = 'https://slsa.dev/provenance/v1';
/** braid's buildType: the predicate's shape is described at the top of this file. */
export const BRAID_BUILD_TYPE = 'https://braid.build/provenance/v1';

/** A statement braid writes is never larger than this. */
export const MAX_STATEMENT_BYTES = 1024 * 1024;
/** Longer strings are cut, keeping the full one's length and sha256. */
export const MAX_STRING_CHARS = 4096;
/** Build args, labels, tags, platforms, secrets, ssh ids, hosts, base images: at most this many. */
export const MAX_LIST_ITEMS = 1000;
/** Max mode records at most this many steps (and fewer when the statement would outgrow its bound). */
export const MAX_STEPS = 2000;

/** `min` records the request, the host and the dependencies; `max` adds the build's steps. */
export type ProvenanceMode = 'min' | 'max';

/** A statement or its input is malformed, or too large. */
export class ProvenanceError extends BraidError {
  constructor(message: string, code: ErrorCode = 'invalid_argument') {
    super(code, message);
  }
}

// ---------------------------------------------------------------------------
// The statement's types

export type DigestSet = Record<string, string>;

/** in-toto ResourceDescriptor (the fields braid writes or reads). */
export interface ResourceDescriptor {
  uri?: string;
  digest?: DigestSet;
  name?: string;
  downloadLocation?: string;
  mediaType?: string;
  annotations?: Record<string, unknown>;
}

export interface StatementSubject {
  name: string;
  digest: DigestSet;
}

export interface InTotoStatement<P = unknown> {
  _type: string;
  predicateType: string;
  subject: StatementSubject[];
  predicate: P;
}

export interface ConfigSource {
  uri?: string;
  digest?: DigestSet;
  path?: string;
}

export interface ProvenanceRequest {
  frontend: string;
  args?: Record<string, string>;
  secrets?: { id: string; optional?: boolean }[];
  ssh?: { id: string; optional?: boolean }[];
}

export interface ExternalParameters {
  configSource: ConfigSource;
  request: ProvenanceRequest;
  dockerfile: { path: string; digest?: DigestSet };
  platforms: string[];
  tags: string[];
}

/** One BuildKit vertex as braid records it in max mode. */
export interface ProvenanceStep {
  id: string;
  name: string;
  inputs?: string[];
  cached: boolean;
  startedOn?: string;
  finishedOn?: string;
  durationMs?: number;
  error?: string;
}

export interface BuildConfig {
  llbDefinition: ProvenanceStep[];
  digestMapping?: Record<string, string>;
  /** Steps left out to keep the statement within its bound. */
  stepsOmitted?: number;
}

/** Keys in byte order, as BuildKit's flattened map marshals them. */
export interface InternalParameters {
  agent: { name: string; host: string };
  attempt: number;
  braidVersion: string;
  buildConfig?: BuildConfig;
  builderPlatform: string;
  coordinator: string;
  emulated: boolean;
  engine: { id: string; version: string };
  kernel?: string;
  qemu?: { handler: string; version?: string };
}

export interface ProvenancePredicate {
  buildDefinition: {
    buildType: string;
    externalParameters: ExternalParameters;
    internalParameters: InternalParameters;
    resolvedDependencies: ResourceDescriptor[];
  };
  runDetails: {
    builder: { id: string; version?: Record<string, string> };
    metadata: {
      invocationId: string;
      startedOn: string;
      finishedOn: string;
      braid_requestId?: string;
      braid_jobId?: string;
    };
  };
}

export type ProvenanceStatement = InTotoStatement<ProvenancePredicate>;

// ---------------------------------------------------------------------------
// The input

/** A BuildKit vertex from the build's trace. */
export interface ProvenanceStepInput {
  /** The vertex digest. */
  digest: string;
  name: string;
  /** Digests of the vertexes it reads. */
  inputs?: readonly string[];
  cached: boolean;
  startedOn?: Date;
  finishedOn?: Date;
  error?: string;
}

export interface ProvenanceInput {
  mode: ProvenanceMode;
  /** The platform image manifest the statement is about. */
  subject: {
    digest: string;
    platform: Platform;
    /** Image references it is pushed under (the index's tags); each becomes a subject name. */
    names: readonly string[];
  };
  /** The build request as the user gave it. */
  request: {
    contextDigest: string;
    /** Where the context can be named from; default `braid-context:<digest>`. */
    contextUri?: string;
    dockerfile: { path: string; digest?: string };
    target?: string;
    buildArgs?: Readonly<Record<string, string>>;
    labels?: Readonly<Record<string, string>>;
    platforms: readonly Platform[];
    tags: readonly string[];
    secretIds?: readonly string[];
    sshIds?: readonly string[];
    noCache?: boolean;
    /** RUN steps' network: `none` or `host`; unset or `default` is the engine's. */
    network?: string;
    addHosts?: readonly string[];
  };
  /** Who built it, and how. */
  builder: {
    /**
     * runDetails.builder.id: `--builder-id`, or the coordinator's address as a
     * URI (`scheme://…` or `urn:…`; a bare `host:port` is refused).
     */
    id: string;
    braidVersion: string;
    coordinator: string;
    agent: { name: string; host: string };
    engine: { id: string; version: string };
    kernel?: string;
    builderPlatform: Platform;
    emulated: boolean;
    qemu?: { handler: string; version?: string };
    /** 1 for the first attempt of the job. */
    attempt: number;
  };
  run: {
    /** The build id (shared by every platform of one build, as BuildKit's is). */
    invocationId: string;
    requestId?: string;
    jobId?: string;
    startedOn: Date;
    finishedOn: Date;
  };
  /** Every base image the build resolved, by digest. */
  baseImages?: readonly { ref: string; digest: string; platform?: Platform }[];
  /** The build's vertexes in trace order (recorded in max mode only). */
  steps?: readonly ProvenanceStepInput[];
}

// ---------------------------------------------------------------------------
// Writing

/** The SLSA v1 provenance statement for one platform image (deterministic, bounded). */
export function provenanceStatement(input: ProvenanceInput): ProvenanceStatement {
  const { subject, request, builder, run } = input;
  if (input.mode !== 'min' && input.mode !== 'max') {
    throw new ProvenanceError(`provenance: unknown mode "${String(input.mode)}" (min or max)`);
  }
  const subjectDigest = requireDigest('subject digest', subject.digest);
  const contextDigest = requireDigest('context digest', request.contextDigest);
  const names = limitList('subject names', subject.names);
  const subjects: StatementSubject[] = [];
  for (const name of names.length > 0 ? names : ['_']) {
    const purl = name === '_' ? '_' : imagePurl(name, subject.platform);
    if (!subjects.some((s) => s.name === purl)) {
      subjects.push({ name: purl, digest: digestSet(subjectDigest) });
    }
  }

  const contextUri = requireUri(
    'context uri',
    request.contextUri ?? `braid-context:${contextDigest}`,
  );
  const builderId = requireUri('builder id', builder.id);
  const dockerfilePath = bounded(request.dockerfile.path || 'Dockerfile');
  const dockerfileDigest =
    request.dockerfile.digest !== undefined
      ? digestSet(requireDigest('Dockerfile digest', request.dockerfile.digest))
      : undefined;

  const args: [string, string][] = [];
  for (const [key, value] of limitEntries('build args', request.buildArgs)) {
    args.push([`build-arg:${key}`, value]);
  }
  for (const [key, value] of limitEntries('labels', request.labels)) {
    args.push([`label:${key}`, value]);
  }
  if (request.target) args.push(['target', bounded(request.target)]);
  if (request.noCache) args.push(['no-cache', '']);
  if (request.network && request.network !== 'default') {
    args.push(['force-network-mode', bounded(request.network)]);
  }
  const hosts = limitList('add-hosts', request.addHosts ?? []);
  if (hosts.length > 0) args.push(['add-hosts', bounded(hosts.join(','))]);
  const secrets = sortedUnique(limitList('secret ids', request.secretIds ?? []));
  const ssh = sortedUnique(limitList('ssh ids', request.sshIds ?? []));
  const requestParams: ProvenanceRequest = { frontend: 'dockerfile.v0' };
  if (args.length > 0) requestParams.args = sortedRecord(args);
  if (secrets.length > 0) requestParams.secrets = secrets.map((id) => ({ id: bounded(id) }));
  if (ssh.length > 0) requestParams.ssh = ssh.map((id) => ({ id: bounded(id) }));

  const externalParameters: ExternalParameters = {
    configSource: { uri: contextUri, digest: digestSet(contextDigest), path: dockerfilePath },
    request: requestParams,
    dockerfile: {
      path: dockerfilePath,
      ...(dockerfileDigest !== undefined && { digest: dockerfileDigest }),
    },
    platforms: limitList('platforms', request.platforms).map((p) => formatPlatform(p)),
    tags: limitList('tags', request.tags).map((t) => bounded(t)),
  };

  if (!Number.isInteger(builder.attempt) || builder.attempt < 1) {
    throw new ProvenanceError(`provenance: attempt ${builder.attempt} is not a positive integer`);
  }
  const internalParameters: InternalParameters = {
    agent: { name: bounded(builder.agent.name), host: bounded(builder.agent.host) },
    attempt: builder.attempt,
    braidVersion: bounded(builder.braidVersion),
    builderPlatform: formatPlatform(builder.builderPlatform),
    coordinator: bounded(builder.coordinator),
    emulated: builder.emulated,
    engine: { id: bounded(builder.engine.id), version: bounded(builder.engine.version) },
    ...(builder.kernel !== undefined && { kernel: bounded(builder.kernel) }),
    ...(builder.qemu !== undefined && {
      qemu: {
        handler: bounded(builder.qemu.handler),
        ...(builder.qemu.version !== undefined && { version: bounded(builder.qemu.version) }),
      },
    }),
  };

  const dependencies: ResourceDescriptor[] = [];
  const seenDependencies = new Set<string>();
  const baseImages = limitList('base images', input.baseImages ?? [])
    .map((image) => ({
      uri: imagePurl(image.ref, image.platform),
      digest: digestSet(requireDigest(`digest of base image ${image.ref}`, image.digest)),
    }))
    .sort((a, b) => compareUtf8(a.uri, b.uri) || compareUtf8(digestText(a), digestText(b)));
  for (const image of baseImages) {
    const key = `${image.uri} ${digestText(image)}`;
    if (seenDependencies.has(key)) continue;
    seenDependencies.add(key);
    dependencies.push(image);
  }
  dependencies.push({ uri: contextUri, digest: digestSet(contextDigest) });

  const predicate: ProvenancePredicate = {
    buildDefinition: {
      buildType: BRAID_BUILD_TYPE,
      externalParameters,
      internalParameters,
      resolvedDependencies: dependencies,
    },
    runDetails: {
      builder: { id: builderId, version: { braid: bounded(builder.braidVersion) } },
      metadata: {
        invocationId: bounded(run.invocationId),
        startedOn: timestamp('startedOn', run.startedOn),
        finishedOn: timestamp('finishedOn', run.finishedOn),
        ...(run.requestId !== undefined && { braid_requestId: bounded(run.requestId) }),
        ...(run.jobId !== undefined && { braid_jobId: bounded(run.jobId) }),
      },
    },
  };
  const statement: ProvenanceStatement = {
    _type: IN_TOTO_STATEMENT_V1,
    predicateType: SLSA_PROVENANCE_V1,
    subject: subjects,
    predicate,
  };

  const baseBytes = serializeStatement(statement).length;
  if (input.mode === 'max') {
    const budget = MAX_STATEMENT_BYTES - baseBytes - 256;
    const config = buildConfig(input.steps ?? [], budget);
    // Sorted keys: buildConfig falls between braidVersion and builderPlatform.
    predicate.buildDefinition.internalParameters = sortedKeys({
      ...internalParameters,
      buildConfig: config,
    });
    while (
      serializeStatement(statement).length > MAX_STATEMENT_BYTES &&
      config.llbDefinition.length > 0
    ) {
      const keep = Math.floor(config.llbDefinition.length / 2);
      const dropped = config.llbDefinition.splice(keep);
      config.stepsOmitted = (config.stepsOmitted ?? 0) + dropped.length;
      config.digestMapping = keepMappings(config.digestMapping, config.llbDefinition);
    }
  }
  const size = serializeStatement(statement).length;
  if (size > MAX_STATEMENT_BYTES) {
    throw new ProvenanceError(
      `provenance statement of ${subjectDigest} would be ${size} bytes (at most ${MAX_STATEMENT_BYTES}): the request is too large to record`,
      'resource_exhausted',
    );
  }
  return statement;
}

/**
 * A statement's bytes: compact JSON in the statement's own key order, with
 * `<`, `>`, `&`, U+2028 and U+2029 escaped as Go's encoding/json writes them.
 */
export function serializeStatement(statement: InTotoStatement): Buffer {
  return Buffer.from(goJson(statement), 'utf8');
}

/** JSON.stringify (no indent, or `indent` spaces) with Go's HTML-safe escapes. */
export function goJson(value: unknown, indent?: number): string {
  // These characters appear in JSON text only inside strings, so replacing them is safe.
  return JSON.stringify(value, null, indent).replace(/[<>&\u2028\u2029]/g, (c) => {
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

/**
 * An image reference as BuildKit names it in provenance (util/purl
 * RefToPURL): `pkg:docker/<familiar name>@<tag>`, `?digest=` when pinned,
 * then `platform=os%2Farch[%2Fvariant]`. A reference without tag or digest
 * means `:latest`.
 */
export function imagePurl(ref: string, platform?: Platform): string {
  const parsed = parseReference(ref, { defaultTag: !ref.includes('@') });
  const name = familiarReference({ domain: parsed.domain, repository: parsed.repository });
  const parts = name.split('/');
  const last = parts.pop() ?? name;
  let purl = 'pkg:docker/';
  if (parts.length > 0) purl += `${parts.map((p) => goEscape(p, 'query')).join('/')}/`;
  purl += goEscape(last, 'query');
  if (parsed.tag !== undefined) purl += `@${goEscape(parsed.tag, 'pathSegment')}`;
  const qualifiers: string[] = [];
  if (parsed.digest !== undefined) {
    qualifiers.push(`digest=${goEscape(parsed.digest, 'pathSegment')}`);
  }
  if (platform !== undefined) {
    qualifiers.push(`platform=${goEscape(formatPlatform(platform), 'pathSegment')}`);
  }
  return qualifiers.length > 0 ? `${purl}?${qualifiers.join('&')}` : purl;
}

/** Go's url.QueryEscape ('query') and url.PathEscape ('pathSegment'), byte for byte. */
function goEscape(text: string, mode: 'query' | 'pathSegment'): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-_.~]/.test(c)) out += c;
    else if (mode === 'pathSegment' && '$&+:=@'.includes(c)) out += c;
    else if (mode === 'query' && c === ' ') out += '+';
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function buildConfig(steps: readonly ProvenanceStepInput[], budgetBytes: number): BuildConfig {
  const ids = new Map<string, string>();
  steps.forEach((step, i) => {
    if (!ids.has(step.digest)) ids.set(step.digest, `step${i}`);
  });
  const recorded: ProvenanceStep[] = [];
  const mapping: [string, string][] = [];
  let used = 0;
  let omitted = 0;
  for (const [i, step] of steps.entries()) {
    const id = `step${i}`;
    const inputs = (step.inputs ?? [])
      .map((digest) => ids.get(digest))
      .filter((input): input is string => input !== undefined);
    const recordedStep: ProvenanceStep = {
      id,
      name: bounded(step.name),
      ...(inputs.length > 0 && { inputs }),
      cached: step.cached,
      ...(step.startedOn !== undefined && {
        startedOn: timestamp(`step ${id} startedOn`, step.startedOn),
      }),
      ...(step.finishedOn !== undefined && {
        finishedOn: timestamp(`step ${id} finishedOn`, step.finishedOn),
      }),
      ...(step.startedOn !== undefined &&
        step.finishedOn !== undefined && {
          durationMs: Math.max(0, step.finishedOn.getTime() - step.startedOn.getTime()),
        }),
      ...(step.error !== undefined && step.error !== '' && { error: bounded(step.error) }),
    };
    const digest = bounded(step.digest);
    const cost = goJson(recordedStep).length + goJson(digest).length + goJson(id).length + 3;
    if (recorded.length >= MAX_STEPS || used + cost > budgetBytes) {
      omitted = steps.length - i;
      break;
    }
    used += cost;
    recorded.push(recordedStep);
    if (ids.get(step.digest) === id) mapping.push([digest, id]);
  }
  return {
    llbDefinition: recorded,
    ...(mapping.length > 0 && { digestMapping: sortedRecord(mapping) }),
    ...(omitted > 0 && { stepsOmitted: omitted }),
  };
}

function keepMappings(
  mapping: Record<string, string> | undefined,
  kept: readonly ProvenanceStep[],
): Record<string, string> | undefined {
  if (mapping === undefined) return undefined;
  const ids = new Set(kept.map((s) => s.id));
  return sortedRecord(Object.entries(mapping).filter(([, id]) => ids.has(id)));
}

/** A TypeURI/ResourceURI: lowercase scheme, no whitespace, short. */
function requireUri(what: string, uri: string): string {
  const hierarchical = /^[a-z][a-z0-9+.-]*:\/\/[^\s/?#A-Z]+(?:[/?#]\S*)?$/;
  const opaque = /^(?:urn|braid-context):\S+$/;
  if (uri.length > MAX_STRING_CHARS || !(hierarchical.test(uri) || opaque.test(uri))) {
    throw new ProvenanceError(
      `provenance: ${what} "${bounded(uri, 100)}" is not a URI (e.g. https://ci.example/run/1)`,
    );
  }
  return uri;
}

function requireDigest(what: string, digest: string): string {
  if (!isValidDigest(digest)) {
    throw new ProvenanceError(`provenance: ${what} "${bounded(digest, 100)}" is not a digest`);
  }
  return digest;
}

function digestSet(digest: string): DigestSet {
  const colon = digest.indexOf(':');
  return { [digest.slice(0, colon)]: digest.slice(colon + 1) };
}

function digestText(d: ResourceDescriptor): string {
  return Object.entries(d.digest ?? {})
    .map(([k, v]) => `${k}:${v}`)
    .join(',');
}

function timestamp(what: string, date: Date): string {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) {
    throw new ProvenanceError(`provenance: ${what} is not a valid time`);
  }
  return date.toISOString();
}

function limitList<T>(what: string, items: readonly T[]): readonly T[] {
  if (items.length > MAX_LIST_ITEMS) {
    throw new ProvenanceError(
      `provenance: ${items.length} ${what} (at most ${MAX_LIST_ITEMS})`,
      'resource_exhausted',
    );
  }
  return items;
}

function limitEntries(
  what: string,
  record: Readonly<Record<string, string>> | undefined,
): [string, string][] {
  const entries = Object.entries(record ?? {});
  limitList(what, entries);
  return entries.map(([k, v]) => [bounded(k), bounded(v)]);
}

function sortedUnique(items: readonly string[]): string[] {
  return [...new Set(items)].sort(compareUtf8);
}

/** Go sorts map keys by their UTF-8 bytes. */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function sortedRecord(entries: readonly (readonly [string, string])[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of [...entries].sort(([a], [b]) => compareUtf8(a, b))) out[k] = v;
  return out;
}

function sortedKeys<T extends object>(obj: T): T {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(obj).sort(compareUtf8)) {
    const value = (obj as Record<string, unknown>)[key];
    if (value !== undefined) out[key] = value;
  }
  return out as T;
}

/** `text`, or its start with the full length and sha256 when longer than `max` characters. */
function bounded(text: string, max: number = MAX_STRING_CHARS): string {
  if (text.length <= max) return text;
  const hex = createHash('sha256').update(text, 'utf8').digest('hex');
  const note = `…[${text.length} chars, sha256:${hex}]`;
  let cut = Math.max(0, max - note.length);
  // Never split a surrogate pair.
  const code = text.charCodeAt(cut - 1);
  if (code >= 0xd800 && code <= 0xdbff) cut -= 1;
  return `${text.slice(0, cut)}${note}`;
}
