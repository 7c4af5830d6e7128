/**
 * The rows of the builds, jobs and cache_records tables as either database
 * hands them back, read into records, and the columns a patch writes — one
 * mapping for SQLite (sqlite-build-store.ts) and PostgreSQL
 * (pg-build-store.ts). SQLite returns INTEGER as a number and a boolean as
 * 0 or 1; PostgreSQL returns BIGINT as a string and BOOLEAN as a boolean.
 */
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { BuildSpecSchema, BuildState, JobRole, PlacementReason } from '../gen/braid/v1/build_pb.js';
import { ImageDescriptorSchema, JobState } from '../gen/braid/v1/common_pb.js';
import { BuildFactsSchema } from '../gen/braid/v1/agent_pb.js';
import type { Platform } from '../oci/platform.js';
import type { CacheRecord } from './scheduler.js';
import type { BuildPatch, BuildRecord, JobPatch, JobRecord } from './store.js';

/** A BIGINT/INTEGER column as the driver returns it. */
type Integer = number | string;

export interface BuildRow {
  id: string;
  spec: Buffer;
  state: number;
  created_at: Integer;
  finished_at: Integer | null;
  index_descriptor: Buffer | null;
  error: string;
  request_id: string;
}

export interface JobRow {
  id: string;
  build_id: string;
  platform: string;
  state: number;
  agent: string;
  emulated: number | boolean;
  emulator: string;
  current_step: string;
  image: Buffer | null;
  started_at: Integer | null;
  finished_at: Integer | null;
  duration_ms: Integer;
  attempt: number;
  error: string;
  placement_reason: number;
  placement_detail: string;
  facts: Buffer | null;
  attestation: Buffer | null;
  role: number;
}

export interface CacheRow {
  lineage: string;
  platform: string;
  agent: string;
  engine_id: string;
  finished_at: Integer;
}

const toMs = (d: Date | undefined) => (d ? d.getTime() : null);
const fromMs = (ms: Integer | null) => (ms === null ? undefined : new Date(Number(ms)));

export function buildFromRow(row: BuildRow): BuildRecord {
  return {
    id: row.id,
    spec: fromBinary(BuildSpecSchema, row.spec),
    state: row.state as BuildState,
    createdAt: new Date(Number(row.created_at)),
    finishedAt: fromMs(row.finished_at),
    index: row.index_descriptor
      ? fromBinary(ImageDescriptorSchema, row.index_descriptor)
      : undefined,
    error: row.error,
    requestId: row.request_id,
  };
}

export function jobFromRow(row: JobRow): JobRecord {
  return {
    id: row.id,
    buildId: row.build_id,
    platform: JSON.parse(row.platform) as Platform,
    state: row.state as JobState,
    agent: row.agent,
    emulated: row.emulated === true || row.emulated === 1,
    emulator: row.emulator,
    currentStep: row.current_step,
    image: row.image ? fromBinary(ImageDescriptorSchema, row.image) : undefined,
    startedAt: fromMs(row.started_at),
    finishedAt: fromMs(row.finished_at),
    durationMs: Number(row.duration_ms),
    attempt: row.attempt,
    error: row.error,
    placementReason: row.placement_reason as PlacementReason,
    placementDetail: row.placement_detail,
    facts: row.facts ? fromBinary(BuildFactsSchema, row.facts) : undefined,
    attestation: row.attestation ? fromBinary(ImageDescriptorSchema, row.attestation) : undefined,
    ...(row.role !== JobRole.UNSPECIFIED && { role: row.role as JobRole }),
  };
}

export function cacheFromRow(row: CacheRow): CacheRecord {
  return {
    lineage: row.lineage,
    platform: JSON.parse(row.platform) as Platform,
    agent: row.agent,
    engineId: row.engine_id,
    finishedAt: new Date(Number(row.finished_at)),
  };
}

/** The values of `INSERT INTO builds (id, spec, state, created_at, error, request_id)`. */
export function buildInsertValues(build: BuildRecord): unknown[] {
  return [
    build.id,
    Buffer.from(toBinary(BuildSpecSchema, build.spec)),
    build.state,
    build.createdAt.getTime(),
    build.error,
    build.requestId,
  ];
}

/** The values of `INSERT INTO jobs (id, build_id, platform, state, attempt, role)`. */
export function jobInsertValues(job: JobRecord, buildId: string): unknown[] {
  return [
    job.id,
    buildId,
    JSON.stringify(job.platform),
    job.state,
    job.attempt,
    job.role ?? JobRole.UNSPECIFIED,
  ];
}

/** The values of `INSERT INTO cache_records (lineage, platform, agent, engine_id, finished_at)`. */
export function cacheInsertValues(record: CacheRecord): unknown[] {
  return [
    record.lineage,
    JSON.stringify(record.platform),
    record.agent,
    record.engineId,
    record.finishedAt.getTime(),
  ];
}

export function buildColumns(patch: BuildPatch): Record<string, unknown> {
  const columns: Record<string, unknown> = {};
  if (patch.state !== undefined) columns.state = patch.state;
  if (patch.finishedAt !== undefined) columns.finished_at = toMs(patch.finishedAt);
  if (patch.index !== undefined) {
    columns.index_descriptor = Buffer.from(toBinary(ImageDescriptorSchema, patch.index));
  }
  if (patch.error !== undefined) columns.error = patch.error;
  return columns;
}

/** `booleans`: how the database stores one (SQLite: an integer, PostgreSQL: a boolean). */
export function jobColumns(
  patch: JobPatch,
  booleans: 'integer' | 'boolean',
): Record<string, unknown> {
  const columns: Record<string, unknown> = {};
  if (patch.state !== undefined) columns.state = patch.state;
  if (patch.agent !== undefined) columns.agent = patch.agent;
  if (patch.emulated !== undefined)
    columns.emulated = booleans === 'integer' ? Number(patch.emulated) : patch.emulated;
  if (patch.emulator !== undefined) columns.emulator = patch.emulator;
  if (patch.currentStep !== undefined) columns.current_step = patch.currentStep;
  if (patch.image !== undefined)
    columns.image = Buffer.from(toBinary(ImageDescriptorSchema, patch.image));
  if (patch.startedAt !== undefined) columns.started_at = toMs(patch.startedAt);
  if (patch.finishedAt !== undefined) columns.finished_at = toMs(patch.finishedAt);
  if (patch.durationMs !== undefined) columns.duration_ms = patch.durationMs;
  if (patch.attempt !== undefined) columns.attempt = patch.attempt;
  if (patch.error !== undefined) columns.error = patch.error;
  if (patch.placementReason !== undefined) columns.placement_reason = patch.placementReason;
  if (patch.placementDetail !== undefined) columns.placement_detail = patch.placementDetail;
  if (patch.facts !== undefined)
    columns.facts = Buffer.from(toBinary(BuildFactsSchema, patch.facts));
  if (patch.attestation !== undefined)
    columns.attestation = Buffer.from(toBinary(ImageDescriptorSchema, patch.attestation));
  return columns;
}
