/**
 * `braid store migrate` (the real binary) copies a coordinator's SQLite
 * store — filled through the real store APIs: the build store, the file
 * context store and the token store — into a real PostgreSQL, and what
 * the PostgreSQL stores read back is what SQLite held; a coordinator
 * started on it lists the history and honours the tokens. A target that holds
 * builds, a running coordinator, a bad URL and a missing data dir are
 * refused in one line, and nothing is written.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import Database from 'better-sqlite3';
import pg from 'pg';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContextStore } from '../../src/coordinator/context-store.js';
import { PgBuildStore } from '../../src/coordinator/pg-build-store.js';
import { PgContextStore } from '../../src/coordinator/pg-context-store.js';
import { SqliteBuildStore } from '../../src/coordinator/sqlite-build-store.js';
import { queuedJob, type BuildRecord, type BuildStore } from '../../src/coordinator/store.js';
import { TokenStore } from '../../src/coordinator/token-store.js';
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
import { parsePlatform } from '../../src/oci/platform.js';
import { braid, startTestCoordinator } from '../support/braid-cli.js';
import { startPostgres, type PostgresCluster } from '../support/postgres.js';

const MiB = 1024 * 1024;
const BIGINTS = new Set(['sequence', 'created_at', 'last_used_at', 'revoked_at']);
const TABLES = ['builds', 'jobs', 'build_events', 'cache_records', 'tokens', 'contexts'];

/** A real tar of files, as the CLI uploads a context. */
async function tarOf(files: Record<string, Buffer | undefined>): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  for (const [name, body] of Object.entries(files)) {
    await new Promise<void>((resolve, reject) =>
      tar.entry({ name, mode: 0o644, mtime: new Date(0) }, body ?? Buffer.alloc(0), (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
  tar.finalize();
  await done;
  return Buffer.concat(chunks);
}

const sha256 = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

function buildRecord(id: string, createdAtMs: number): BuildRecord {
  return {
    id,
    spec: create(BuildSpecSchema, {
      contextDigest: `sha256:${'c'.repeat(64)}`,
      platforms: [create(PlatformSchema, { os: 'linux', architecture: 'arm64' })],
      tags: [`127.0.0.1:5000/team/${id}:1`],
      buildArgs: { VERSION: '1.2.3' },
    }),
    state: BuildState.QUEUED,
    createdAt: new Date(createdAtMs),
    error: '',
    requestId: `req-${id}`,
  };
}

function logEvent(sequence: number, line: string): BuildEvent {
  return create(BuildEventSchema, {
    sequence: BigInt(sequence),
    time: timestampFromDate(new Date(1_700_000_100_000 + sequence)),
    body: { case: 'log', value: { jobId: 'j', source: LogSource.BUILD, text: line } },
  });
}

/**
 * A data dir as a coordinator leaves it: three builds (one succeeded with
 * an index, one failed, one still running with an emulated job), their
 * events, cache records, two contexts (one over a chunk) and three tokens
 * (one revoked, one used).
 */
async function fillDataDir(dataDir: string, prefix: string) {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, 'braid.db');
  const builds = new SqliteBuildStore(file);
  const index = create(ImageDescriptorSchema, {
    mediaType: 'application/vnd.oci.image.index.v1+json',
    digest: `sha256:${'d'.repeat(64)}`,
    sizeBytes: 1234n,
  });
  const ids = [`${prefix}-b`, `${prefix}-a`, `${prefix}-c`]; // ids out of creation order
  const base = 1_700_000_000_000;
  for (const [i, id] of ids.entries()) {
    await builds.commit([
      {
        kind: 'createBuild',
        build: buildRecord(id, base + i * 1000),
        jobs: [
          queuedJob(`${id}-amd64`, id, parsePlatform('linux/amd64')),
          queuedJob(`${id}-arm64`, id, parsePlatform('linux/arm64'), JobRole.REPRODUCIBILITY_CHECK),
        ],
      },
    ]);
    for (let s = 1; s <= 7; s++) {
      await builds.commit([{ kind: 'appendEvent', buildId: id, event: logEvent(s, `${id} ${s}`) }]);
    }
  }
  await builds.commit([
    {
      kind: 'updateJob',
      id: `${ids[0]}-amd64`,
      patch: {
        state: JobState.SUCCEEDED,
        agent: 'builder-1',
        emulated: true,
        emulator: 'qemu-x86_64 8.2',
        image: index,
        startedAt: new Date(base + 10),
        finishedAt: new Date(base + 20),
        durationMs: 10,
        attempt: 2,
        placementReason: PlacementReason.ONLY_CAPABLE,
        placementDetail: 'the only amd64 agent connected',
      },
    },
    {
      kind: 'updateBuild',
      id: ids[0]!,
      patch: { state: BuildState.SUCCEEDED, finishedAt: new Date(base + 30), index },
    },
    {
      kind: 'updateBuild',
      id: ids[1]!,
      patch: { state: BuildState.FAILED, finishedAt: new Date(base + 40), error: 'exit 1' },
    },
    { kind: 'updateBuild', id: ids[2]!, patch: { state: BuildState.RUNNING } },
    {
      kind: 'recordCache',
      record: {
        lineage: `${prefix}-lineage`,
        platform: parsePlatform('linux/amd64'),
        agent: 'builder-1',
        engineId: 'engine-1',
        finishedAt: new Date(),
      },
      forgetBefore: new Date(0),
    },
  ]);
  await builds.close();

  const contexts = new ContextStore(dataDir, 64 * MiB);
  await contexts.init();
  const digests: { digest: string; bytes: Buffer }[] = [];
  for (const files of [
    // The same in every data dir (a context two coordinators both received).
    { Dockerfile: Buffer.from('FROM scratch\n'), 'app/main.go': Buffer.from('package main\n') },
    { Dockerfile: Buffer.from('FROM busybox\n'), 'big.bin': randomBytes(MiB + 4321) },
  ]) {
    const bytes = await tarOf(files);
    const digest = sha256(bytes);
    await contexts.put(digest, bytes.length, Readable.from([bytes]));
    digests.push({ digest, bytes });
  }

  let tick = 0;
  const tokens = new TokenStore(file, { clock: () => new Date(base + 100 * ++tick) });
  const ci = tokens.create('api', `${prefix}-ci`);
  const join_ = tokens.create('join', `${prefix}-builders`);
  const old = tokens.create('api', `${prefix}-old`);
  tokens.revoke(`${prefix}-old`);
  tokens.touch(join_.record.id);
  tokens.close();
  return { file, ids, contexts: digests, apiToken: ci.token, revokedToken: old.token };
}

/** Every row of a target table as SQLite holds it: BIGINTs as numbers, no identity column. */
async function targetRows(url: string, table: string, order: string): Promise<unknown[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<Record<string, unknown>>(
      `SELECT * FROM ${table} ORDER BY ${order}`,
    );
    return rows.map((row) => {
      const { seq: _seq, ...rest } = row;
      return Object.fromEntries(
        Object.entries(rest).map(([k, v]) => [
          k,
          typeof v === 'string' && BIGINTS.has(k) ? Number(v) : v,
        ]),
      );
    });
  } finally {
    await client.end();
  }
}

function sourceRows(file: string, table: string, order: string): unknown[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare(`SELECT * FROM ${table} ORDER BY ${order}`).all();
  } finally {
    db.close();
  }
}

async function counts(url: string): Promise<Record<string, number>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const result: Record<string, number> = {};
    for (const table of TABLES) {
      const { rows } = await client.query<{ n: string }>(`SELECT COUNT(*) AS n FROM ${table}`);
      result[table] = Number(rows[0]!.n);
    }
    return result;
  } finally {
    await client.end();
  }
}

async function readAll(store: BuildStore) {
  const builds = await store.listBuilds(100, []);
  return {
    builds,
    jobs: await Promise.all(builds.map((b) => store.jobsOf(b.id))),
    events: await Promise.all(builds.map((b) => store.eventsAfter(b.id, 0n))),
    unfinished: await store.unfinishedBuilds(),
    cache: await store.cacheRecords(new Date(0)),
  };
}

describe('braid store migrate', () => {
  let cluster: PostgresCluster;
  let dir: string;

  beforeAll(async () => {
    cluster = await startPostgres();
    dir = await mkdtemp(join(tmpdir(), 'braid-store-migrate-'));
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('copies builds, jobs, events, cache records, tokens and contexts, and PostgreSQL reads back what SQLite held', async () => {
    const dataDir = join(dir, 'one');
    const source = await fillDataDir(dataDir, 'one');
    const url = await cluster.createDatabase();

    const result = await braid(['store', 'migrate', '--data-dir', dataDir, '--to', url]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(result.stdout).not.toContain(cluster.password);
    const bigBytes = source.contexts[1]!.bytes.length + source.contexts[0]!.bytes.length;
    expect(result.stdout).toBe(
      [
        `copied ${source.file} into postgres://braid:***@127.0.0.1:${cluster.port}/${new URL(url).pathname.slice(1)}?sslmode=disable, every row counted there:`,
        '  builds         3',
        '  jobs           6',
        '  build events   21',
        '  cache records  1',
        '  tokens         3',
        `  contexts       2 (${bigBytes} bytes)`,
        '',
      ].join('\n'),
    );

    const sqlite = new SqliteBuildStore(source.file);
    const target = await PgBuildStore.open(url, { maxConnections: 2 });
    try {
      const before = await readAll(sqlite);
      const after = await readAll(target);
      expect(after).toEqual(before);
      // Creation order, not id order, and every field of the finished build and its emulated job.
      expect(after.builds.map((b) => b.id)).toEqual(['one-c', 'one-a', 'one-b']);
      expect(after.unfinished.map((u) => [u.build.id, u.lastSequence])).toEqual([['one-c', 7n]]);
      const [job] = await target.jobsOf('one-b');
      expect(job).toMatchObject({ emulated: true, attempt: 2, agent: 'builder-1' });

      const contexts = new PgContextStore(target.pool, 64 * MiB);
      for (const { digest, bytes } of source.contexts) {
        expect(await contexts.size(digest)).toBe(bytes.length);
        const stream = await contexts.open(digest);
        const chunks: Buffer[] = [];
        for await (const chunk of stream) chunks.push(chunk as Buffer);
        expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
        expect(await contexts.hasFile(digest, 'Dockerfile')).toBe(true);
      }
      expect(await contexts.hasFile(source.contexts[0]!.digest, 'app/main.go')).toBe(true);
    } finally {
      await sqlite.close();
      await target.close();
    }

    expect(await targetRows(url, 'tokens', 'created_at, id')).toEqual(
      sourceRows(source.file, 'tokens', 'created_at, id'),
    );
    const tokens = sourceRows(source.file, 'tokens', 'created_at') as Record<string, unknown>[];
    expect(tokens.filter((t) => t.revoked_at !== null)).toHaveLength(1);
    expect(tokens.filter((t) => t.last_used_at !== null)).toHaveLength(1);
    expect(await targetRows(url, 'build_events', 'build_id, sequence')).toEqual(
      sourceRows(source.file, 'build_events', 'build_id, sequence'),
    );
  }, 60_000);

  it('a coordinator started on the migrated store lists the history and honours a token made on SQLite', async () => {
    const dataDir = join(dir, 'served');
    const source = await fillDataDir(dataDir, 'served');
    const url = await cluster.createDatabase();
    const migrated = await braid(['store', 'migrate', '--data-dir', dataDir, '--to', url]);
    expect(migrated.code, migrated.stderr).toBe(0);
    const coordinator = await startTestCoordinator('127.0.0.1:0', [
      '--store',
      url,
      '--require-auth',
    ]);
    try {
      const list = (token: string) =>
        braid([
          'builds',
          '--coordinator',
          coordinator.address,
          '--token',
          token,
          '--output',
          'json',
        ]);
      const listed = await list(source.apiToken);
      expect(listed.code, listed.stderr).toBe(0);
      const builds = listed.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { id: string });
      expect(builds.map((b) => b.id)).toEqual(['served-c', 'served-a', 'served-b']);
      // The token revoked on SQLite stays revoked.
      const refused = await list(source.revokedToken);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/^braid: unauthenticated: token "served-old" .* was revoked/);
    } finally {
      await coordinator.stop();
    }
  }, 60_000);

  it('refuses a target that already holds builds in one line naming it without the password, and leaves it unchanged', async () => {
    const dataDir = join(dir, 'two');
    await fillDataDir(dataDir, 'two');
    const url = await cluster.createDatabase();
    expect((await braid(['store', 'migrate', '--data-dir', dataDir, '--to', url])).code).toBe(0);
    const before = await counts(url);

    const again = await braid(['store', 'migrate', '--data-dir', dataDir], {
      env: { BRAID_STORE: url },
    });
    expect(again.code).toBe(1);
    expect(again.stdout).toBe('');
    expect(again.stderr).toBe(
      `braid: the store at postgres://braid:***@127.0.0.1:${cluster.port}/${new URL(url).pathname.slice(1)}?sslmode=disable already holds 3 builds, 3 tokens, 2 contexts: nothing was copied (pass --append to add to it)\n`,
    );
    expect(await counts(url)).toEqual(before);

    // Appending the same rows meets their ids: the whole copy is undone.
    const append = await braid([
      'store',
      'migrate',
      '--data-dir',
      dataDir,
      '--to',
      url,
      '--append',
    ]);
    expect(append.code).toBe(1);
    expect(append.stderr).toMatch(
      /^braid: copying builds into the store at postgres:\/\/braid:\*\*\*@\S+ failed: duplicate key value violates unique constraint "builds_pkey" \(Key \(id\)=\(two-b\) already exists\.\): nothing was written\n$/,
    );
    expect(append.stderr).not.toContain(cluster.password);
    expect(await counts(url)).toEqual(before);
  }, 60_000);

  it('appends another data dir with --append, skipping the contexts already there', async () => {
    const url = await cluster.createDatabase();
    const first = join(dir, 'three-a');
    await fillDataDir(first, 'three-a');
    expect((await braid(['store', 'migrate', '--data-dir', first, '--to', url])).code).toBe(0);
    const second = join(dir, 'three-b');
    const { contexts } = await fillDataDir(second, 'three-b');
    const result = await braid([
      'store',
      'migrate',
      '--data-dir',
      second,
      '--to',
      url,
      '--append',
      '--output',
      'json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout) as {
      rows: Record<string, number>;
      contexts: Record<string, number>;
    };
    expect(summary.rows).toEqual({
      builds: 3,
      jobs: 6,
      build_events: 21,
      cache_records: 1,
      tokens: 3,
    });
    // The first context is the same in both data dirs: it is there already.
    expect(summary.contexts).toEqual({ copied: 1, bytes: contexts[1]!.bytes.length, present: 1 });
    expect(await counts(url)).toEqual({
      builds: 6,
      jobs: 12,
      build_events: 42,
      cache_records: 2,
      tokens: 6,
      contexts: 3,
    });
  }, 60_000);

  it('refuses while a coordinator has the SQLite store open, and writes nothing', async () => {
    const dataDir = join(dir, 'four');
    const source = await fillDataDir(dataDir, 'four');
    const url = await cluster.createDatabase();
    // The coordinator keeps its store open for its whole life, as this does.
    const running = new SqliteBuildStore(source.file);
    try {
      const result = await braid(['store', 'migrate', '--data-dir', dataDir, '--to', url]);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(
        `braid: ${source.file} is in use (a coordinator or braid tokens has it open): stop the coordinator, then migrate\n`,
      );
    } finally {
      await running.close();
    }
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const { rows } = await client.query("SELECT to_regclass('builds') AS found");
    await client.end();
    expect(rows[0]).toEqual({ found: null });
  }, 60_000);

  it('refuses a URL that is not postgres:// in one line, exit 2, without its password', async () => {
    const dataDir = join(dir, 'five');
    await fillDataDir(dataDir, 'five');
    const result = await braid([
      'store',
      'migrate',
      '--data-dir',
      dataDir,
      '--to',
      'mysql://braid:s3cret-pw@127.0.0.1:3306/braid',
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      'braid: --to: expected postgres://USER@HOST:PORT/DATABASE, got "mysql://braid:***@127.0.0.1:3306/braid"\n',
    );
    const none = await braid(['store', 'migrate', '--data-dir', dataDir]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(
      /^braid: braid store migrate needs the PostgreSQL store .*BRAID_STORE\n$/,
    );
  }, 60_000);

  it('refuses a wrong password in one line without it, exit 1', async () => {
    const dataDir = join(dir, 'six');
    await fillDataDir(dataDir, 'six');
    const url = `postgres://braid:not-the-password@127.0.0.1:${cluster.port}/braid?sslmode=disable`;
    const result = await braid(['store', 'migrate', '--data-dir', dataDir, '--to', url]);
    expect(result.code).toBe(1);
    expect(result.stderr.split('\n')).toHaveLength(2);
    expect(result.stderr).toMatch(
      new RegExp(
        `^braid: cannot open the store at postgres://braid:\\*\\*\\*@127\\.0\\.0\\.1:${cluster.port}/braid`,
      ),
    );
    expect(result.stderr).not.toContain('not-the-password');
  }, 60_000);

  it('names a data dir without a coordinator database, exit 2', async () => {
    const missing = join(dir, 'no-such-dir');
    const url = await cluster.createDatabase();
    const result = await braid(['store', 'migrate', '--data-dir', missing, '--to', url]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      `braid: no coordinator database in ${missing} (braid.db is missing): pass the coordinator's --data-dir\n`,
    );
  }, 60_000);
});
