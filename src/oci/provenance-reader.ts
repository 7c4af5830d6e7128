/**
 * Reading provenance back: any image's SLSA statement (braid's, or
 * BuildKit's SLSA v0.2 or v1) parsed, checked and reduced to the facts
 * `braid verify` shows, naming those a statement lacks. Writing them is
 * provenance.ts.
 */
import {
  BRAID_BUILD_TYPE,
  IN_TOTO_STATEMENT_V1,
  ProvenanceError,
  SLSA_PROVENANCE_V1,
  type ConfigSource,
  type DigestSet,
  type InTotoStatement,
  type ResourceDescriptor,
} from './provenance.js';

/** What BuildKit before v0.12 wrote; read, never written. */
export const IN_TOTO_STATEMENT_V01 = 'https://in-toto.io/Statement/v0.1';
export const SLSA_PROVENANCE_V02 = 'https://slsa.dev/provenance/v0.2';
export const BUILDKIT_BUILD_TYPE_V1 =
  'https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md';
export const BUILDKIT_BUILD_TYPE_V02 = 'https://mobyproject.org/buildkit@v1';
/** readProvenance refuses more than this by default (BuildKit's max mode can be large). */
export const MAX_READ_BYTES = 16 * 1024 * 1024;

/** The facts `braid verify` shows; a reading lists those the statement lacks in `absent`. */
export type ProvenanceFact =
  | 'builderId'
  | 'invocationId'
  | 'startedOn'
  | 'finishedOn'
  | 'builderPlatform'
  | 'configSource'
  | 'baseImages'
  | 'agent'
  | 'engine'
  | 'emulated'
  | 'attempt';

export interface ProvenanceReading {
  statementType: string;
  predicateType: string;
  slsaVersion: 'v1' | 'v0.2';
  /** Who wrote it, by its buildType. */
  producer: 'braid' | 'buildkit' | 'unknown';
  buildType: string;
  subjects: { name?: string; digest: DigestSet }[];
  builderId?: string;
  invocationId?: string;
  startedOn?: string;
  finishedOn?: string;
  builderPlatform?: string;
  configSource?: ConfigSource;
  /** resolvedDependencies (v1) or materials (v0.2). */
  dependencies: ResourceDescriptor[];
  /** The dependencies that are images (`pkg:docker/…`, `pkg:oci/…`). */
  baseImages: ResourceDescriptor[];
  /** braid's own facts (absent from other producers' statements). */
  agent?: { name: string; host: string };
  engine?: { id: string; version: string };
  emulated?: boolean;
  qemu?: { handler: string; version?: string };
  attempt?: number;
  braidVersion?: string;
  coordinator?: string;
  /** Steps recorded (max mode), when the statement has a buildConfig. */
  steps?: number;
  absent: ProvenanceFact[];
  statement: InTotoStatement<Record<string, unknown>>;
}

type Json = Record<string, unknown>;

/**
 * Parses and checks a provenance statement (an attestation layer's bytes):
 * braid's, or BuildKit's SLSA v0.2 or v1. Anything malformed or larger than
 * `maxBytes` is one ProvenanceError naming what is wrong.
 */
export function readProvenance(
  bytes: Uint8Array,
  options: { maxBytes?: number } = {},
): ProvenanceReading {
  const maxBytes = options.maxBytes ?? MAX_READ_BYTES;
  if (bytes.length > maxBytes) {
    throw new ProvenanceError(
      `provenance statement is ${bytes.length} bytes, more than the ${maxBytes} allowed`,
      'resource_exhausted',
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8'));
  } catch (err) {
    throw new ProvenanceError(`provenance statement is not JSON: ${(err as Error).message}`);
  }
  const fail = (what: string): never => {
    throw new ProvenanceError(`provenance statement: ${what}`);
  };
  if (!isObject(parsed)) return fail('not a JSON object');
  const statementType = parsed._type;
  if (statementType !== IN_TOTO_STATEMENT_V1 && statementType !== IN_TOTO_STATEMENT_V01) {
    return fail(
      `_type ${describe(statementType)} is not an in-toto statement (${IN_TOTO_STATEMENT_V1})`,
    );
  }
  const subjects = readSubjects(parsed.subject, fail);
  const predicateType = parsed.predicateType;
  if (typeof predicateType !== 'string' || predicateType === '') {
    return fail('predicateType is missing');
  }
  if (predicateType !== SLSA_PROVENANCE_V1 && predicateType !== SLSA_PROVENANCE_V02) {
    return fail(
      `predicateType ${describe(predicateType)} is not SLSA provenance (${SLSA_PROVENANCE_V1} or ${SLSA_PROVENANCE_V02})`,
    );
  }
  const predicate = parsed.predicate;
  if (!isObject(predicate)) return fail('predicate is not an object');
  const statement = parsed as unknown as InTotoStatement<Json>;
  const reading =
    predicateType === SLSA_PROVENANCE_V1 ? readV1(predicate, fail) : readV02(predicate, fail);
  const complete: Omit<ProvenanceReading, 'absent'> = {
    statementType,
    predicateType,
    subjects,
    statement,
    ...reading,
  };
  return { ...complete, absent: absentFacts(complete) };
}

/** Whether a reading's subjects name `digest` (`sha256:<hex>`). */
export function provenanceCovers(reading: ProvenanceReading, digest: string): boolean {
  const colon = digest.indexOf(':');
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  return reading.subjects.some((s) => s.digest[algorithm] === hex);
}

type Fail = (what: string) => never;
type VersionReading = Omit<
  ProvenanceReading,
  'statementType' | 'predicateType' | 'subjects' | 'statement' | 'absent'
>;

function readSubjects(value: unknown, fail: Fail): ProvenanceReading['subjects'] {
  if (!Array.isArray(value) || value.length === 0) return fail('subject is missing or empty');
  return value.map((item, i) => {
    if (!isObject(item)) return fail(`subject[${i}] is not an object`);
    const digest = readDigestSet(item.digest, `subject[${i}].digest`, fail);
    if (digest === undefined) return fail(`subject[${i}] has no digest`);
    const name = optionalString(item.name, `subject[${i}].name`, fail);
    return { ...(name !== undefined && { name }), digest };
  });
}

function readV1(predicate: Json, fail: Fail): VersionReading {
  const definition = predicate.buildDefinition;
  if (!isObject(definition)) return fail('predicate.buildDefinition is missing');
  const buildType = requiredString(
    definition.buildType,
    'predicate.buildDefinition.buildType',
    fail,
  );
  const external = optionalObject(
    definition.externalParameters,
    'predicate.buildDefinition.externalParameters',
    fail,
  );
  const internal =
    optionalObject(
      definition.internalParameters,
      'predicate.buildDefinition.internalParameters',
      fail,
    ) ?? {};
  const dependencies = readDescriptors(
    definition.resolvedDependencies,
    'predicate.buildDefinition.resolvedDependencies',
    fail,
  );
  const runDetails = optionalObject(predicate.runDetails, 'predicate.runDetails', fail) ?? {};
  const builder = optionalObject(runDetails.builder, 'predicate.runDetails.builder', fail);
  const metadata = optionalObject(runDetails.metadata, 'predicate.runDetails.metadata', fail) ?? {};
  const producer = producerOf(buildType);
  const reading: VersionReading = {
    slsaVersion: 'v1',
    producer,
    buildType,
    dependencies,
    baseImages: dependencies.filter(isImageDependency),
  };
  const builderId = optionalString(builder?.id, 'predicate.runDetails.builder.id', fail);
  if (builderId) reading.builderId = builderId;
  // in-toto-golang before 2024 wrote invocationID.
  const invocationId =
    optionalString(metadata.invocationId, 'predicate.runDetails.metadata.invocationId', fail) ??
    optionalString(metadata.invocationID, 'predicate.runDetails.metadata.invocationID', fail);
  if (invocationId) reading.invocationId = invocationId;
  const startedOn = optionalTimestamp(
    metadata.startedOn,
    'predicate.runDetails.metadata.startedOn',
    fail,
  );
  if (startedOn) reading.startedOn = startedOn;
  const finishedOn = optionalTimestamp(
    metadata.finishedOn,
    'predicate.runDetails.metadata.finishedOn',
    fail,
  );
  if (finishedOn) reading.finishedOn = finishedOn;
  const where = 'predicate.buildDefinition.internalParameters';
  const builderPlatform = optionalString(
    internal.builderPlatform,
    `${where}.builderPlatform`,
    fail,
  );
  if (builderPlatform) reading.builderPlatform = builderPlatform;
  const configSource = readConfigSource(
    external?.configSource,
    'path',
    'predicate.buildDefinition.externalParameters.configSource',
    fail,
  );
  if (configSource) reading.configSource = configSource;
  const steps = countSteps(internal.buildConfig, `${where}.buildConfig`, fail);
  if (steps !== undefined) reading.steps = steps;
  if (producer === 'braid') Object.assign(reading, readBraidInternals(internal, where, fail));
  return reading;
}

function readV02(predicate: Json, fail: Fail): VersionReading {
  // Required by SLSA v0.2, yet BuildKit writes {"id": ""} when no builder id was given.
  const builder = optionalObject(predicate.builder, 'predicate.builder', fail);
  const builderId = optionalString(builder?.id, 'predicate.builder.id', fail);
  const buildType = requiredString(predicate.buildType, 'predicate.buildType', fail);
  const invocation = optionalObject(predicate.invocation, 'predicate.invocation', fail) ?? {};
  const environment =
    optionalObject(invocation.environment, 'predicate.invocation.environment', fail) ?? {};
  const metadata = optionalObject(predicate.metadata, 'predicate.metadata', fail) ?? {};
  const dependencies = readDescriptors(predicate.materials, 'predicate.materials', fail);
  const reading: VersionReading = {
    slsaVersion: 'v0.2',
    producer: producerOf(buildType),
    buildType,
    dependencies,
    baseImages: dependencies.filter(isImageDependency),
  };
  if (builderId) reading.builderId = builderId;
  // The spec says buildInvocationId; in-toto-golang (so BuildKit) writes buildInvocationID.
  const invocationId =
    optionalString(metadata.buildInvocationId, 'predicate.metadata.buildInvocationId', fail) ??
    optionalString(metadata.buildInvocationID, 'predicate.metadata.buildInvocationID', fail);
  if (invocationId) reading.invocationId = invocationId;
  const startedOn = optionalTimestamp(
    metadata.buildStartedOn,
    'predicate.metadata.buildStartedOn',
    fail,
  );
  if (startedOn) reading.startedOn = startedOn;
  const finishedOn = optionalTimestamp(
    metadata.buildFinishedOn,
    'predicate.metadata.buildFinishedOn',
    fail,
  );
  if (finishedOn) reading.finishedOn = finishedOn;
  const platform = optionalString(
    environment.platform,
    'predicate.invocation.environment.platform',
    fail,
  );
  if (platform) reading.builderPlatform = platform;
  const configSource = readConfigSource(
    invocation.configSource,
    'entryPoint',
    'predicate.invocation.configSource',
    fail,
  );
  if (configSource) reading.configSource = configSource;
  const steps = countSteps(predicate.buildConfig, 'predicate.buildConfig', fail);
  if (steps !== undefined) reading.steps = steps;
  return reading;
}

function readBraidInternals(internal: Json, where: string, fail: Fail): Partial<VersionReading> {
  const out: Partial<VersionReading> = {};
  const agent = optionalObject(internal.agent, `${where}.agent`, fail);
  if (agent) {
    out.agent = {
      name: requiredString(agent.name, `${where}.agent.name`, fail),
      host: requiredString(agent.host, `${where}.agent.host`, fail),
    };
  }
  const engine = optionalObject(internal.engine, `${where}.engine`, fail);
  if (engine) {
    out.engine = {
      id: requiredString(engine.id, `${where}.engine.id`, fail),
      version: requiredString(engine.version, `${where}.engine.version`, fail),
    };
  }
  if (internal.emulated !== undefined && internal.emulated !== null) {
    if (typeof internal.emulated !== 'boolean') fail(`${where}.emulated is not a boolean`);
    out.emulated = internal.emulated as boolean;
  }
  const qemu = optionalObject(internal.qemu, `${where}.qemu`, fail);
  if (qemu) {
    const version = optionalString(qemu.version, `${where}.qemu.version`, fail);
    out.qemu = {
      handler: requiredString(qemu.handler, `${where}.qemu.handler`, fail),
      ...(version !== undefined && { version }),
    };
  }
  if (internal.attempt !== undefined && internal.attempt !== null) {
    if (!Number.isInteger(internal.attempt) || (internal.attempt as number) < 1) {
      fail(`${where}.attempt is not a positive integer`);
    }
    out.attempt = internal.attempt as number;
  }
  const braidVersion = optionalString(internal.braidVersion, `${where}.braidVersion`, fail);
  if (braidVersion) out.braidVersion = braidVersion;
  const coordinator = optionalString(internal.coordinator, `${where}.coordinator`, fail);
  if (coordinator) out.coordinator = coordinator;
  return out;
}

function readConfigSource(
  value: unknown,
  pathKey: 'path' | 'entryPoint',
  where: string,
  fail: Fail,
): ConfigSource | undefined {
  const source = optionalObject(value, where, fail);
  if (!source) return undefined;
  const uri = optionalString(source.uri, `${where}.uri`, fail);
  const digest = readDigestSet(source.digest, `${where}.digest`, fail);
  const path = optionalString(source[pathKey], `${where}.${pathKey}`, fail);
  if (!uri && !digest && !path) return undefined;
  return {
    ...(uri && { uri }),
    ...(digest && { digest }),
    ...(path && { path }),
  };
}

function countSteps(value: unknown, where: string, fail: Fail): number | undefined {
  const config = optionalObject(value, where, fail);
  if (!config) return undefined;
  const steps = config.llbDefinition;
  if (steps === undefined || steps === null) return 0;
  if (!Array.isArray(steps)) return fail(`${where}.llbDefinition is not an array`);
  return steps.length;
}

function readDescriptors(value: unknown, where: string, fail: Fail): ResourceDescriptor[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) return fail(`${where} is not an array`);
  return value.map((item, i) => {
    const at = `${where}[${i}]`;
    if (!isObject(item)) return fail(`${at} is not an object`);
    const uri = optionalString(item.uri, `${at}.uri`, fail);
    const digest = readDigestSet(item.digest, `${at}.digest`, fail);
    const name = optionalString(item.name, `${at}.name`, fail);
    if (!uri && !digest && item.content === undefined) {
      return fail(`${at} has none of uri, digest and content`);
    }
    return {
      ...(uri && { uri }),
      ...(digest && { digest }),
      ...(name && { name }),
    };
  });
}

function readDigestSet(value: unknown, where: string, fail: Fail): DigestSet | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) return fail(`${where} is not an object`);
  const entries = Object.entries(value);
  if (entries.length === 0) return undefined;
  const out: DigestSet = {};
  for (const [algorithm, hex] of entries) {
    if (typeof hex !== 'string' || hex === '') fail(`${where}.${algorithm} is not a string`);
    out[algorithm] = hex as string;
  }
  return out;
}

function isImageDependency(d: ResourceDescriptor): boolean {
  return d.uri?.startsWith('pkg:docker/') === true || d.uri?.startsWith('pkg:oci/') === true;
}

function producerOf(buildType: string): ProvenanceReading['producer'] {
  if (buildType === BRAID_BUILD_TYPE) return 'braid';
  if (buildType === BUILDKIT_BUILD_TYPE_V1 || buildType === BUILDKIT_BUILD_TYPE_V02) {
    return 'buildkit';
  }
  return 'unknown';
}

function absentFacts(reading: Omit<ProvenanceReading, 'absent'>): ProvenanceFact[] {
  const present: Record<ProvenanceFact, boolean> = {
    builderId: reading.builderId !== undefined,
    invocationId: reading.invocationId !== undefined,
    startedOn: reading.startedOn !== undefined,
    finishedOn: reading.finishedOn !== undefined,
    builderPlatform: reading.builderPlatform !== undefined,
    configSource: reading.configSource !== undefined,
    baseImages: reading.baseImages.length > 0,
    agent: reading.agent !== undefined,
    engine: reading.engine !== undefined,
    emulated: reading.emulated !== undefined,
    attempt: reading.attempt !== undefined,
  };
  return (Object.keys(present) as ProvenanceFact[]).filter((fact) => !present[fact]);
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$/;

function optionalTimestamp(value: unknown, where: string, fail: Fail): string | undefined {
  const text = optionalString(value, where, fail);
  if (text === undefined) return undefined;
  if (!RFC3339.test(text) || Number.isNaN(Date.parse(text))) {
    return fail(`${where} ${describe(text)} is not an RFC 3339 time`);
  }
  return text;
}

function requiredString(value: unknown, where: string, fail: Fail): string {
  const text = optionalString(value, where, fail);
  if (text === undefined) return fail(`${where} is missing`);
  return text;
}

/** Unset, null and "" mean the same (SLSA's parsing rules). */
function optionalString(value: unknown, where: string, fail: Fail): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') return fail(`${where} is not a string`);
  return value;
}

function optionalObject(value: unknown, where: string, fail: Fail): Json | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) return fail(`${where} is not an object`);
  return value;
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A value for an error line: quoted, and short. */
function describe(value: unknown): string {
  if (value === undefined) return '(missing)';
  const text = typeof value === 'string' ? JSON.stringify(value) : (JSON.stringify(value) ?? '');
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
