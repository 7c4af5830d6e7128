/**
 * One contract for every build store: the same tests run against SQLite
 * (a file in a temp dir) and PostgreSQL (a real cluster this suite starts,
 * one database per test). What the coordinator relies on — round trips,
 * atomic commits, restart order, paging, cache records, schema versions,
 * LiveBuilds resuming after a restart — holds for both.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  BuildEventSchema,
  BuildSpecSchema,
  BuildState,
  JobRole,
  LogSource,
  PlacementReason,
  type BuildEvent,
} from '../../src/gen/braid/v1/build_pb.js';
import {
  ImageDescriptorSchema,
  JobState,
  PlatformSchema,
} from '../../src/gen/braid/v1/common_pb.js';
import { BuildFactsSchema, ResolvedImageSchema } from '../../src/gen/braid/v1/agent_pb.js';
import { LiveBuilds } from '../../src/coordinator/live-builds.js';
import { BuildEventWakeups, PgListener } from '../../src/coordinator/pg-notify.js';
import { StoredBuilds } from '../../src/coordinator/stored-builds.js';
import { createLogger } from '../../src/log.js';
import {
  PG_SCHEMA_VERSION,
  PgBuildStore,
  redactedUrl,
} from '../../src/coordinator/pg-build-store.js';
import {
  SQLITE_SCHEMA_VERSION,
  SqliteBuildStore,
} from '../../src/coordinator/sqlite-build-store.js';
import { StoreSchemaError } from '../../src/coordinator/store-schema.js';
import {
  queuedJob,
  type BuildRecord,
  type BuildStore,
  type JobRecord,
} from '../../src/coordinator/store.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { startPostgres, type PostgresCluster } from '../support/postgres.js';

/** Where one test's store lives: opened, reopened and aged to a newer schema. */
interface Place {
  /** How the store is named in its errors. */
  where: string;
  open(): Promise<BuildStore>;
  /** Record a migration this braid does not know, as a newer braid would. */
  setSchemaVersion(version: number): Promise<void>;
}

interface Kind {
  name: string;
  latest: number;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  place(): Promise<Place>;
}

const sqlite = (): Kind => {
  let dir = '';
  let places = 0;
  return {
    name: 'SQLite',
    latest: SQLITE_SCHEMA_VERSION,
    setup: async () => {
      dir = await mkdtemp(join(tmpdir(), 'braid-store-contract-'));
    },
    teardown: () => rm(dir, { recursive: true, force: true }),
    place: () => {
      const file = join(dir, `braid-${++places}.db`);
      return Promise.resolve({
        where: file,
        // The constructor throws: as a rejection, like PostgreSQL's open.
        open: () => Promise.resolve().then(() => new SqliteBuildStore(file)),
        setSchemaVersion: (version) => {
          const db = new Database(file);
          db.prepare(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'from the future', 0)",
          ).run(version);
          db.close();
          return Promise.resolve();
        },
      });
    },
  };
};

const postgres = (): Kind => {
  let cluster: PostgresCluster | undefined;
  return {
    name: 'PostgreSQL',
    latest: PG_SCHEMA_VERSION,
    setup: async () => {
      cluster = await startPostgres();
    },
    teardown: async () => {
      await cluster?.stop();
    },
    place: async () => {
      const url = await (cluster as PostgresCluster).createDatabase();
      return {
        where: redactedUrl(url),
        open: () => PgBuildStore.open(url, { maxConnections: 4 }),
        setSchemaVersion: async (version) => {
          const client = new pg.Client({ connectionString: url });
          await client.connect();
          await client.query(
            "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, 'from the future', 0)",
            [version],
          );
          await client.end();
        },
      };
    },
  };
};

const amd64 = parsePlatform('linux/amd64');
const arm64 = parsePlatform('linux/arm64');
const armv7 = parsePlatform('linux/arm/v7');
const at = (ms: number) => new Date(ms);
const digest = (c: string) => `sha256:${c.repeat(64)}`;

function buildRecord(id: string, createdAt: Date, state = BuildState.QUEUED): BuildRecord {
  return {
    id,
    spec: create(BuildSpecSchema, {
      contextDigest: digest('c'),
      dockerfile: 'Dockerfile.release',
      platforms: [create(PlatformSchema, { os: 'linux', architecture: 'arm', variant: 'v7' })],
      tags: ['127.0.0.1:5000/team/hello:1', '127.0.0.1:5000/team/hello:latest'],
      buildArgs: { VERSION: '1.2.3' },
      labels: { 'org.example.team': 'a' },
      noCache: true,
      platformTags: true,
      secretIds: ['npmrc'],
    }),
    state,
    createdAt,
    error: '',
    requestId: `req-${id}`,
  };
}

function event(sequence: number, text: string): BuildEvent {
  return create(BuildEventSchema, {
    sequence: BigInt(sequence),
    time: timestampFromDate(at(5000 + sequence)),
    body: { case: 'log', value: { jobId: 'j', source: LogSource.BUILD, text } },
  });
}

/** A job as read back: the placement fields of a queued job are stored as unset. */
const stored = (job: JobRecord): JobRecord => ({
  placementReason: PlacementReason.UNSPECIFIED,
  placementDetail: '',
  ...job,
});

const texts = (events: BuildEvent[]) =>
  events.map((e) => `${e.sequence}:${e.body.case === 'log' ? e.body.value.text : e.body.case}`);

describe.each([sqlite(), postgres()])('the $name build store', (kind) => {
  let place: Place;
  const opened: BuildStore[] = [];
  const open = async () => {
    const store = await place.open();
    opened.push(store);
    return store;
  };

  beforeAll(async () => {
    await kind.setup();
  });
  afterAll(async () => {
    await kind.teardown();
  });
  afterEach(async () => {
    for (const store of opened.splice(0)) await store.close();
  });
  const fresh = async () => {
    place = await kind.place();
    return open();
  };

  it('reads back a build and its jobs with every field as written', async () => {
    const store = await fresh();
    const build = buildRecord('b1', at(1_700_000_000_123));
    const jobs = [
      queuedJob('b1-z', 'b1', armv7),
      queuedJob('b1-a', 'b1', arm64, JobRole.REPRODUCIBILITY_CHECK),
    ];
    await store.commit([{ kind: 'createBuild', build, jobs }]);
    expect(await store.getBuild('b1')).toEqual(build);
    expect(await store.jobsOf('b1')).toEqual(jobs.map(stored));

    const image = create(ImageDescriptorSchema, {
      digest: digest('1'),
      sizeBytes: 1234n,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      platform: create(PlatformSchema, { os: 'linux', architecture: 'arm', variant: 'v7' }),
    });
    const facts = create(BuildFactsSchema, {
      baseImages: [create(ResolvedImageSchema, { ref: 'busybox:1', digest: digest('b') })],
      host: 'builder-1',
      engineId: 'engine-1',
      engineVersion: '27.1',
      kernel: '6.1.0',
      builderPlatform: create(PlatformSchema, { os: 'linux', architecture: 'amd64' }),
      emulatorVersion: 'qemu-arm 8.2',
      startedAt: timestampFromDate(at(10_000)),
      finishedAt: timestampFromDate(at(20_000)),
    });
    const attestation = create(ImageDescriptorSchema, {
      digest: digest('a'),
      sizeBytes: 99n,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
    });
    const job: JobRecord = {
      ...(jobs[0] as JobRecord),
      state: JobState.SUCCEEDED,
      agent: 'agent-1',
      emulated: true,
      emulator: 'qemu-arm',
      currentStep: '[2/3] RUN make',
      image,
      startedAt: at(10_000),
      finishedAt: at(20_000),
      durationMs: 10_000,
      attempt: 2,
      error: 'first attempt: agent lost',
      placementReason: PlacementReason.CACHE_AFFINITY,
      placementDetail: 'cache affinity (built lineage L for linux/arm/v7 3m ago)',
      facts,
      attestation,
    };
    const { id: _id, buildId: _buildId, platform: _platform, role: _role, ...patch } = job;
    const index = create(ImageDescriptorSchema, {
      digest: digest('i'),
      sizeBytes: 700n,
      mediaType: 'application/vnd.oci.image.index.v1+json',
    });
    await store.commit([
      { kind: 'updateJob', id: 'b1-z', patch },
      {
        kind: 'updateBuild',
        id: 'b1',
        patch: { state: BuildState.FAILED, finishedAt: at(30_000), index, error: 'one failed' },
      },
    ]);
    expect(await store.jobsOf('b1')).toEqual([job, stored(jobs[1] as JobRecord)]);
    expect(await store.getBuild('b1')).toEqual({
      ...build,
      state: BuildState.FAILED,
      finishedAt: at(30_000),
      index,
      error: 'one failed',
    });
    expect(await store.getBuild('nope')).toBeUndefined();
    expect(await store.jobsOf('nope')).toEqual([]);
  });

  it('changes only the fields a patch names, and an empty patch changes nothing', async () => {
    const store = await fresh();
    const build = buildRecord('b1', at(1000));
    const job = queuedJob('b1-1', 'b1', amd64);
    await store.commit([{ kind: 'createBuild', build, jobs: [job] }]);
    await store.commit([
      { kind: 'updateJob', id: 'b1-1', patch: { state: JobState.ASSIGNED, agent: 'a1' } },
      { kind: 'updateBuild', id: 'b1', patch: { state: BuildState.RUNNING } },
    ]);
    await store.commit([
      { kind: 'updateJob', id: 'b1-1', patch: { currentStep: '[1/2] FROM busybox' } },
      { kind: 'updateJob', id: 'b1-1', patch: {} },
      { kind: 'updateBuild', id: 'b1', patch: {} },
    ]);
    expect(await store.jobsOf('b1')).toEqual([
      stored({ ...job, state: JobState.ASSIGNED, agent: 'a1', currentStep: '[1/2] FROM busybox' }),
    ]);
    expect(await store.getBuild('b1')).toEqual({ ...build, state: BuildState.RUNNING });
  });

  it('returns events in sequence order and pages through them with eventsAfter', async () => {
    const store = await fresh();
    await store.commit([{ kind: 'createBuild', build: buildRecord('b1', at(1000)), jobs: [] }]);
    await store.commit([{ kind: 'createBuild', build: buildRecord('b2', at(1000)), jobs: [] }]);
    await store.commit([
      { kind: 'appendEvent', buildId: 'b1', event: event(1, 'one') },
      { kind: 'appendEvent', buildId: 'b2', event: event(1, 'other build') },
      { kind: 'appendEvent', buildId: 'b1', event: event(2, 'two') },
    ]);
    await store.commit([
      { kind: 'appendEvent', buildId: 'b1', event: event(3, 'three') },
      { kind: 'appendEvent', buildId: 'b1', event: event(4, 'four') },
      { kind: 'appendEvent', buildId: 'b1', event: event(5, 'five') },
    ]);
    expect(texts(await store.eventsAfter('b1', 0n))).toEqual([
      '1:one',
      '2:two',
      '3:three',
      '4:four',
      '5:five',
    ]);
    expect(texts(await store.eventsAfter('b1', 0n, 2))).toEqual(['1:one', '2:two']);
    expect(texts(await store.eventsAfter('b1', 2n, 2))).toEqual(['3:three', '4:four']);
    expect(texts(await store.eventsAfter('b1', 4n, 2))).toEqual(['5:five']);
    expect(await store.eventsAfter('b1', 5n)).toEqual([]);
    const [first] = await store.eventsAfter('b1', 0n, 1);
    expect(first).toEqual(event(1, 'one'));
    expect(texts(await store.eventsAfter('b2', 0n))).toEqual(['1:other build']);
  });

  it('stores nothing of a commit whose last write fails (a duplicate event sequence), and goes on working', async () => {
    const store = await fresh();
    const build = buildRecord('b1', at(1000));
    await store.commit([
      { kind: 'createBuild', build, jobs: [queuedJob('b1-1', 'b1', amd64)] },
      { kind: 'appendEvent', buildId: 'b1', event: event(1, 'queued') },
    ]);
    await expect(
      store.commit([
        { kind: 'updateBuild', id: 'b1', patch: { state: BuildState.RUNNING } },
        { kind: 'updateJob', id: 'b1-1', patch: { state: JobState.ASSIGNED, agent: 'a1' } },
        { kind: 'appendEvent', buildId: 'b1', event: event(2, 'running') },
        {
          kind: 'recordCache',
          record: { lineage: 'L', platform: amd64, agent: 'a1', engineId: 'e', finishedAt: at(1) },
          forgetBefore: at(0),
        },
        { kind: 'appendEvent', buildId: 'b1', event: event(2, 'running again') },
      ]),
    ).rejects.toThrow();
    expect((await store.getBuild('b1'))?.state).toBe(BuildState.QUEUED);
    expect((await store.jobsOf('b1'))[0]?.agent).toBe('');
    expect(texts(await store.eventsAfter('b1', 0n))).toEqual(['1:queued']);
    expect(await store.cacheRecords(at(0))).toEqual([]);
    // A build created in the failed commit is gone with it.
    await expect(
      store.commit([
        { kind: 'createBuild', build: buildRecord('b2', at(2000)), jobs: [] },
        { kind: 'createBuild', build: buildRecord('b2', at(2000)), jobs: [] },
      ]),
    ).rejects.toThrow();
    expect(await store.getBuild('b2')).toBeUndefined();

    await store.commit([{ kind: 'appendEvent', buildId: 'b1', event: event(2, 'running') }]);
    expect(texts(await store.eventsAfter('b1', 0n))).toEqual(['1:queued', '2:running']);
    expect(store.isOpen()).toBe(true);
  });

  it('applies commits in the order of calls, even when they are not awaited one by one', async () => {
    const store = await fresh();
    await store.commit([{ kind: 'createBuild', build: buildRecord('b1', at(1000)), jobs: [] }]);
    const commits = Array.from({ length: 30 }, (_, i) =>
      store.commit([
        { kind: 'appendEvent', buildId: 'b1', event: event(i + 1, `e${i + 1}`) },
        { kind: 'updateBuild', id: 'b1', patch: { error: `after ${i + 1}` } },
      ]),
    );
    // One in the middle fails (its sequence is taken); those after it still apply.
    const clash = store.commit([{ kind: 'appendEvent', buildId: 'b1', event: event(3, 'x') }]);
    const more = store.commit([{ kind: 'appendEvent', buildId: 'b1', event: event(31, 'e31') }]);
    await Promise.all(commits);
    await expect(clash).rejects.toThrow();
    await more;
    const events = await store.eventsAfter('b1', 0n);
    expect(events.map((e) => Number(e.sequence))).toEqual(
      Array.from({ length: 31 }, (_, i) => i + 1),
    );
    expect((await store.getBuild('b1'))?.error).toBe('after 30');
  });

  it('resumes unfinished builds oldest first (ties in creation order), with their jobs and last event', async () => {
    const store = await fresh();
    const writes = [
      buildRecord('b-late', at(2000)),
      buildRecord('b-early', at(1000), BuildState.RUNNING),
      buildRecord('b-tie', at(1000), BuildState.STITCHING),
      buildRecord('b-done', at(500), BuildState.SUCCEEDED),
      buildRecord('b-cancelled', at(600), BuildState.CANCELLED),
    ].map((build) => ({
      kind: 'createBuild' as const,
      build,
      jobs: [
        queuedJob(`${build.id}-z`, build.id, amd64),
        queuedJob(`${build.id}-a`, build.id, arm64),
      ],
    }));
    await store.commit(writes);
    await store.commit([
      { kind: 'appendEvent', buildId: 'b-early', event: event(1, 'a') },
      { kind: 'appendEvent', buildId: 'b-early', event: event(2, 'b') },
      { kind: 'appendEvent', buildId: 'b-early', event: event(3, 'c') },
      { kind: 'appendEvent', buildId: 'b-tie', event: event(1, 'a') },
      { kind: 'appendEvent', buildId: 'b-done', event: event(9, 'z') },
    ]);
    const unfinished = await store.unfinishedBuilds();
    expect(unfinished.map((u) => [u.build.id, u.lastSequence, u.jobs.map((j) => j.id)])).toEqual([
      ['b-early', 3n, ['b-early-z', 'b-early-a']],
      ['b-tie', 1n, ['b-tie-z', 'b-tie-a']],
      ['b-late', 0n, ['b-late-z', 'b-late-a']],
    ]);
    expect(unfinished[0]?.build).toEqual(buildRecord('b-early', at(1000), BuildState.RUNNING));
  });

  it('lists builds newest first, filtered by state and cut at the limit', async () => {
    const store = await fresh();
    await store.commit(
      [
        buildRecord('b1', at(1000), BuildState.SUCCEEDED),
        buildRecord('b2', at(3000), BuildState.FAILED),
        buildRecord('b3', at(2000), BuildState.RUNNING),
        buildRecord('b4', at(3000), BuildState.SUCCEEDED),
        buildRecord('b5', at(500), BuildState.QUEUED),
      ].map((build) => ({ kind: 'createBuild' as const, build, jobs: [] })),
    );
    const ids = (builds: BuildRecord[]) => builds.map((b) => b.id);
    expect(ids(await store.listBuilds(10, []))).toEqual(['b4', 'b2', 'b3', 'b1', 'b5']);
    expect(ids(await store.listBuilds(2, []))).toEqual(['b4', 'b2']);
    expect(ids(await store.listBuilds(10, [BuildState.SUCCEEDED]))).toEqual(['b4', 'b1']);
    expect(
      ids(await store.listBuilds(10, [BuildState.QUEUED, BuildState.RUNNING, BuildState.FAILED])),
    ).toEqual(['b2', 'b3', 'b5']);
    expect(ids(await store.listBuilds(1, [BuildState.SUCCEEDED]))).toEqual(['b4']);
    expect(await store.listBuilds(10, [BuildState.TIMED_OUT])).toEqual([]);
  });

  it('keeps one cache record per lineage, platform and agent, and forgets those older than asked', async () => {
    const store = await fresh();
    const record = (agent: string, engineId: string, ms: number, platform = amd64) => ({
      lineage: 'registry/team/app (Dockerfile)',
      platform,
      agent,
      engineId,
      finishedAt: at(ms),
    });
    await store.commit([
      { kind: 'recordCache', record: record('a1', 'engine-1', 1000), forgetBefore: at(0) },
      { kind: 'recordCache', record: record('a2', 'engine-2', 1500), forgetBefore: at(0) },
      { kind: 'recordCache', record: record('a1', 'engine-3', 2000, armv7), forgetBefore: at(0) },
    ]);
    await store.commit([
      { kind: 'recordCache', record: record('a1', 'engine-4', 3000), forgetBefore: at(0) },
    ]);
    const rows = async (since: number) =>
      (await store.cacheRecords(at(since)))
        .map((r) => [r.agent, r.engineId, r.finishedAt.getTime(), r.platform])
        .sort((a, b) => String(a[1]).localeCompare(String(b[1])));
    expect(await rows(0)).toEqual([
      ['a2', 'engine-2', 1500, amd64],
      ['a1', 'engine-3', 2000, armv7],
      ['a1', 'engine-4', 3000, amd64],
    ]);
    expect(await rows(2000)).toEqual([
      ['a1', 'engine-3', 2000, armv7],
      ['a1', 'engine-4', 3000, amd64],
    ]);
    // Recording forgets every record finished before forgetBefore.
    await store.commit([
      { kind: 'recordCache', record: record('a3', 'engine-5', 4000), forgetBefore: at(2500) },
    ]);
    expect(await rows(0)).toEqual([
      ['a1', 'engine-4', 3000, amd64],
      ['a3', 'engine-5', 4000, amd64],
    ]);
  });

  it('keeps its data across a reopen and migrates nothing twice', async () => {
    let store = await fresh();
    await store.commit([
      {
        kind: 'createBuild',
        build: buildRecord('b1', at(1000)),
        jobs: [queuedJob('b1-1', 'b1', amd64)],
      },
      { kind: 'appendEvent', buildId: 'b1', event: event(1, 'one') },
    ]);
    await store.close();
    expect(store.isOpen()).toBe(false);
    store = await open();
    expect(store.isOpen()).toBe(true);
    expect(await store.getBuild('b1')).toEqual(buildRecord('b1', at(1000)));
    expect((await store.jobsOf('b1')).map((j) => j.id)).toEqual(['b1-1']);
    expect(texts(await store.eventsAfter('b1', 0n))).toEqual(['1:one']);
    await store.close();
    // A third open still works: the version rows were not inserted again.
    store = await open();
    expect((await store.unfinishedBuilds()).map((u) => u.build.id)).toEqual(['b1']);
  });

  it('refuses a store a newer braid migrated, with one line naming it and both versions', async () => {
    const store = await fresh();
    await store.close();
    await place.setSchemaVersion(kind.latest + 2);
    const refused = await place.open().then(
      (s) => {
        opened.push(s);
        return undefined;
      },
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(StoreSchemaError);
    expect((refused as Error).message).toBe(
      `the store at ${place.where} has schema version ${kind.latest + 2}, newer than this braid (${kind.latest}): upgrade braid`,
    );
    expect((refused as Error).message).not.toContain('\n');
  });

  it('resumes LiveBuilds after a restart: builds in flight come back and their events continue the sequence', async () => {
    const store = await fresh();
    const live = new LiveBuilds(store);
    live.createBuild(buildRecord('b1', at(1000)), [
      queuedJob('b1-1', 'b1', amd64),
      queuedJob('b1-2', 'b1', arm64),
    ]);
    live.createBuild(buildRecord('b2', at(2000)), [queuedJob('b2-1', 'b2', amd64)]);
    live.atomically(() => {
      live.updateBuild('b1', { state: BuildState.RUNNING });
      live.updateJob('b1-1', { state: JobState.ASSIGNED, agent: 'a1' });
      live.appendEvent('b1', { case: 'log', value: { text: 'assigned' } }, at(1100));
    });
    live.appendEvent('b1', { case: 'log', value: { text: 'running' } }, at(1200));
    live.appendEvent('b2', { case: 'log', value: { text: 'queued' } }, at(2100));
    // b2 ends: it is not resumed.
    live.updateBuild('b2', { state: BuildState.CANCELLED, finishedAt: at(2200) });
    await live.flushed();
    await store.close();

    const again = await open();
    const resumed = new LiveBuilds(again);
    const unfinished = await resumed.load(at(0));
    expect(unfinished.map((u) => [u.build.id, u.lastSequence])).toEqual([['b1', 2n]]);
    expect(resumed.job('b1-1')).toMatchObject({ state: JobState.ASSIGNED, agent: 'a1' });
    expect(resumed.jobsOf('b1').map((j) => j.id)).toEqual(['b1-1', 'b1-2']);
    expect(resumed.build('b2')).toBeUndefined();
    const next = resumed.appendEvent('b1', { case: 'log', value: { text: 'resumed' } }, at(3000));
    expect(next?.sequence).toBe(3n);
    await resumed.flushed();
    expect(texts(await again.eventsAfter('b1', 0n))).toEqual([
      '1:assigned',
      '2:running',
      '3:resumed',
    ]);
    expect((await again.getBuild('b2'))?.state).toBe(BuildState.CANCELLED);
  });
});

describe('the PostgreSQL store and its password', () => {
  let cluster: PostgresCluster;
  let dir: string;
  beforeAll(async () => {
    cluster = await startPostgres();
    dir = await mkdtemp(join(tmpdir(), 'braid-pgpass-'));
  });
  afterAll(async () => {
    await cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const withoutPassword = (url: string) => url.replace(`:${cluster.password}@`, '@');

  it('names the store by its URL without the password', async () => {
    const url = await cluster.createDatabase();
    expect(redactedUrl(url)).toBe(
      `postgres://braid:***@127.0.0.1:${cluster.port}/${new URL(url).pathname.slice(1)}?sslmode=disable`,
    );
    expect(redactedUrl('postgres://u@h/db?password=secret&sslmode=require')).toBe(
      'postgres://u@h/db?password=***&sslmode=require',
    );
    const store = await PgBuildStore.open(url);
    expect(store.where).not.toContain(cluster.password);
    await store.close();
  });

  it('refuses a wrong password with one line naming the store, never the password', async () => {
    const url = await cluster.createDatabase();
    const wrong = url.replace(cluster.password, 'not-the-password');
    const err = await PgBuildStore.open(wrong).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(
      new RegExp(
        `^cannot open the store at postgres://braid:\\*\\*\\*@127\\.0\\.0\\.1:${cluster.port}/.*password authentication failed`,
      ),
    );
    expect(err?.message).not.toContain('not-the-password');
  });

  it('takes the password from PGPASSWORD when the URL has none', async () => {
    const url = withoutPassword(await cluster.createDatabase());
    vi.stubEnv('PGPASSFILE', join(dir, 'none'));
    vi.stubEnv('PGPASSWORD', cluster.password);
    const store = await PgBuildStore.open(url);
    expect(await store.listBuilds(1, [])).toEqual([]);
    await store.close();
  });

  it('takes the password from the password file (PGPASSFILE)', async () => {
    const url = withoutPassword(await cluster.createDatabase());
    const file = join(dir, 'pgpass');
    await writeFile(file, `127.0.0.1:${cluster.port}:*:braid:${cluster.password}\n`, {
      mode: 0o600,
    });
    vi.stubEnv('PGPASSWORD', undefined);
    vi.stubEnv('PGPASSFILE', file);
    const store = await PgBuildStore.open(url);
    expect(await store.listBuilds(1, [])).toEqual([]);
    await store.close();
  });

  it('lets two coordinators start on an empty database at once: one migrates, both open', async () => {
    const url = await cluster.createDatabase();
    const stores = await Promise.all([PgBuildStore.open(url), PgBuildStore.open(url)]);
    expect(await Promise.all(stores.map((s) => s.schemaVersion()))).toEqual([
      PG_SCHEMA_VERSION,
      PG_SCHEMA_VERSION,
    ]);
    for (const store of stores) await store.close();
  });

  it("wakes a standby's watch when the leader stores events, without polling", async () => {
    const url = await cluster.createDatabase();
    const leader = await PgBuildStore.open(url);
    const standby = await PgBuildStore.open(url);
    const listener = new PgListener(
      url,
      createLogger({ level: 'silent', format: 'json', component: 'test' }),
    );
    const wakeups = new BuildEventWakeups(listener);
    // A poll of a minute: only a notification can deliver the events within the test.
    const reads = new StoredBuilds(standby, { wakeups, pollMs: 60_000 });
    const stop = new AbortController();
    try {
      await leader.commit([
        { kind: 'createBuild', build: buildRecord('b1', at(1000)), jobs: [] },
        { kind: 'appendEvent', buildId: 'b1', event: event(1, 'queued') },
      ]);
      const seen: string[] = [];
      const watching = (async () => {
        for await (const e of reads.watch('b1', 0n, true, stop.signal)) {
          seen.push(...texts([e]));
          if (seen.length === 3) return;
        }
      })();
      await vi.waitFor(() => expect(seen).toEqual(['1:queued']), { timeout: 10_000 });
      // The watch now waits; each commit of the leader wakes it.
      await leader.commit([{ kind: 'appendEvent', buildId: 'b1', event: event(2, 'running') }]);
      await vi.waitFor(() => expect(seen).toEqual(['1:queued', '2:running']), { timeout: 10_000 });
      await leader.commit([
        { kind: 'appendEvent', buildId: 'b1', event: event(3, 'pushed') },
        {
          kind: 'updateBuild',
          id: 'b1',
          patch: { state: BuildState.SUCCEEDED, finishedAt: at(9000) },
        },
      ]);
      await watching;
      expect(seen).toEqual(['1:queued', '2:running', '3:pushed']);
    } finally {
      stop.abort();
      wakeups.close();
      await listener.close();
      await leader.close();
      await standby.close();
    }
  });
});

describe('an SQLite store made before schema versions', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-unversioned-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('counts as version 0, keeps its builds and is stamped with every version once', async () => {
    const file = join(dir, 'braid.db');
    const old = new Database(file);
    // A coordinator from before request ids, roles and schema_version.
    old.exec(`CREATE TABLE builds (
      id TEXT PRIMARY KEY, spec BLOB NOT NULL, state INTEGER NOT NULL,
      created_at INTEGER NOT NULL, finished_at INTEGER, index_descriptor BLOB,
      error TEXT NOT NULL DEFAULT '')`);
    old
      .prepare('INSERT INTO builds (id, spec, state, created_at) VALUES (?, ?, ?, ?)')
      .run('bold', Buffer.alloc(0), BuildState.RUNNING, 1000);
    old.close();

    for (let i = 0; i < 2; i++) {
      const store = new SqliteBuildStore(file);
      expect((await store.unfinishedBuilds()).map((u) => [u.build.id, u.build.requestId])).toEqual([
        ['bold', ''],
      ]);
      await store.close();
    }
    const db = new Database(file, { readonly: true });
    const versions = db.prepare('SELECT version FROM schema_version ORDER BY version').all();
    db.close();
    expect(versions).toEqual(
      Array.from({ length: SQLITE_SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })),
    );
  });
});
