import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { create, toBinary } from '@bufbuild/protobuf';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BuildSpecSchema, PlacementReason } from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';
import { buildLineage } from '../../src/coordinator/lineage.js';
import { LiveBuilds } from '../../src/coordinator/live-builds.js';
import type { CacheRecord } from '../../src/coordinator/scheduler.js';
import { SqliteBuildStore } from '../../src/coordinator/sqlite-build-store.js';
import { buildToProto } from '../../src/coordinator/store.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { parseReference } from '../../src/oci/reference.js';

/** The schema of a coordinator from before placement reasons and cache records. */
const OLD_SCHEMA = `
CREATE TABLE builds (
  id TEXT PRIMARY KEY, spec BLOB NOT NULL, state INTEGER NOT NULL, created_at INTEGER NOT NULL,
  finished_at INTEGER, index_descriptor BLOB, error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE jobs (
  id TEXT PRIMARY KEY, build_id TEXT NOT NULL REFERENCES builds(id), platform TEXT NOT NULL,
  state INTEGER NOT NULL, agent TEXT NOT NULL DEFAULT '', emulated INTEGER NOT NULL DEFAULT 0,
  emulator TEXT NOT NULL DEFAULT '', current_step TEXT NOT NULL DEFAULT '', image BLOB,
  started_at INTEGER, finished_at INTEGER, duration_ms INTEGER NOT NULL DEFAULT 0,
  attempt INTEGER NOT NULL DEFAULT 1, error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE build_events (
  build_id TEXT NOT NULL, sequence INTEGER NOT NULL, event BLOB NOT NULL,
  PRIMARY KEY (build_id, sequence)
) WITHOUT ROWID;
`;

const amd64 = parsePlatform('linux/amd64');
const LINEAGE = '127.0.0.1:5000/team/hello (Dockerfile)';

describe('the store keeps cache records and placement reasons', () => {
  let dir: string;
  let store: SqliteBuildStore | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-cache-store-'));
  });
  afterEach(async () => {
    await store?.close();
    store = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('opens a database made by an older coordinator and reads its jobs as placed for no stated reason', async () => {
    const file = join(dir, 'braid.db');
    const old = new Database(file);
    old.exec(OLD_SCHEMA);
    const spec = create(BuildSpecSchema, { tags: ['127.0.0.1:5000/team/hello:1'] });
    old
      .prepare('INSERT INTO builds (id, spec, state, created_at) VALUES (?, ?, ?, ?)')
      .run('b1', Buffer.from(toBinary(BuildSpecSchema, spec)), 4, 1000);
    old
      .prepare('INSERT INTO jobs (id, build_id, platform, state, agent) VALUES (?, ?, ?, ?, ?)')
      .run('b1-1', 'b1', JSON.stringify(amd64), JobState.SUCCEEDED, 'a1');
    old.close();

    store = new SqliteBuildStore(file);
    const [job] = await store.jobsOf('b1');
    expect(job?.agent).toBe('a1');
    expect(job?.placementReason).toBe(PlacementReason.UNSPECIFIED);
    const record = await store.getBuild('b1');
    expect(record && buildToProto(record, [job!]).jobs[0]?.placementReason).toBe(
      PlacementReason.UNSPECIFIED,
    );

    await store.commit([
      {
        kind: 'updateJob',
        id: 'b1-1',
        patch: {
          placementReason: PlacementReason.CACHE_AFFINITY,
          placementDetail: 'cache affinity (built lineage L for linux/amd64 3m ago)',
        },
      },
    ]);
    const [placed] = await store.jobsOf('b1');
    expect(placed?.placementReason).toBe(PlacementReason.CACHE_AFFINITY);
    expect(placed?.placementDetail).toBe('cache affinity (built lineage L for linux/amd64 3m ago)');
  });

  it('keeps the latest record per lineage, platform and agent, and forgets old ones, in memory and stored', async () => {
    store = new SqliteBuildStore(join(dir, 'braid.db'));
    const live = new LiveBuilds(store);
    const at = (ms: number) => new Date(ms);
    const record = (agent: string, engineId: string, finishedAt: Date, lineage = LINEAGE) => ({
      agent,
      engineId,
      platform: amd64,
      lineage,
      finishedAt,
    });
    live.recordCache(record('a1', 'engine-1', at(1000)), at(0));
    live.recordCache(record('a1', 'engine-2', at(2000)), at(0));
    live.recordCache(record('a2', 'engine-3', at(3000)), at(0));
    live.recordCache(record('a3', 'engine-4', at(3000), 'other (Dockerfile)'), at(0));

    const rows = (records: CacheRecord[]) =>
      records
        .map((r) => [r.agent, r.engineId, r.finishedAt.getTime(), r.platform.architecture])
        .sort();
    const expected = [
      ['a1', 'engine-2', 2000, 'amd64'],
      ['a2', 'engine-3', 3000, 'amd64'],
    ];
    expect(rows(live.cacheRecords(LINEAGE, at(0)))).toEqual(expected);
    expect(rows((await store.cacheRecords(at(0))).filter((r) => r.lineage === LINEAGE))).toEqual(
      expected,
    );
    expect(live.cacheRecords(LINEAGE, at(2500)).map((r) => r.agent)).toEqual(['a2']);
    expect(live.cacheRecords('nothing built', at(0))).toEqual([]);

    // Recording prunes what is older than the given bound, in memory and in the store.
    live.recordCache(record('a4', 'engine-5', at(5000)), at(2500));
    expect(
      live
        .cacheRecords(LINEAGE, at(0))
        .map((r) => r.agent)
        .sort(),
    ).toEqual(['a2', 'a4']);
    // A coordinator started on the same store remembers the same.
    const restarted = new LiveBuilds(store);
    await restarted.load(at(0));
    expect(
      restarted
        .cacheRecords(LINEAGE, at(0))
        .map((r) => r.agent)
        .sort(),
    ).toEqual(['a2', 'a4']);
  });
});

describe('buildLineage', () => {
  it('is the first tag without its tag, the Dockerfile path and the target', () => {
    const tag = parseReference('127.0.0.1:5000/team/hello:1.2.3');
    expect(buildLineage(tag, 'Dockerfile', '')).toBe('127.0.0.1:5000/team/hello (Dockerfile)');
    expect(buildLineage(tag, 'docker/app.Dockerfile', 'build')).toBe(
      '127.0.0.1:5000/team/hello (docker/app.Dockerfile, target build)',
    );
    expect(buildLineage(parseReference('alpine'), '', '')).toBe(
      'docker.io/library/alpine (Dockerfile)',
    );
  });
});
