import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { create, toBinary } from '@bufbuild/protobuf';
import Database from 'better-sqlite3';
import { pack } from 'tar-stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BuildService, BuildSpecSchema, BuildState } from '../../src/gen/braid/v1/build_pb.js';
import { SqliteBuildStore } from '../../src/coordinator/sqlite-build-store.js';
import { buildToProto } from '../../src/coordinator/store.js';
import { RpcError } from '../../src/errors.js';
import { createClient, type ServiceClient } from '../../src/rpc/client.js';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';
import { waitFor } from '../support/farm.js';
import { probeUrlFromLog, scrape } from '../support/prom-text.js';

type BuildClient = ServiceClient<(typeof BuildService)['method']>;

async function contextTar(): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  tar.entry({ name: 'Dockerfile', mode: 0o644, mtime: new Date(0) }, 'FROM scratch\n');
  tar.finalize();
  await done;
  return Buffer.concat(chunks);
}

async function startWithProbe(extra: string[] = []): Promise<{
  coordinator: TestCoordinator;
  probe: string;
}> {
  const coordinator = await startTestCoordinator('127.0.0.1:0', [
    '--metrics-listen',
    '127.0.0.1:0',
    ...extra,
  ]);
  const probe = await waitFor(
    'the probe address in the log',
    async () => probeUrlFromLog(coordinator.process.stderr()),
    15_000,
  );
  return { coordinator, probe };
}

describe('the coordinator probe endpoint', () => {
  let coordinator: TestCoordinator;
  let probe: string;

  beforeAll(async () => {
    ({ coordinator, probe } = await startWithProbe());
  });
  afterAll(async () => {
    await coordinator?.stop();
  });

  it('serves on its own loopback port, apart from gRPC', () => {
    expect(probe).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(new URL(probe).port).not.toBe(coordinator.address.split(':')[1]);
  });

  it('answers /healthz and /readyz with 200 ok', async () => {
    for (const path of ['healthz', 'readyz']) {
      const response = await fetch(new URL(path, probe));
      expect(response.status).toBe(200);
      expect(await response.text()).toBe('ok\n');
    }
  });

  it('serves the metrics of a farm with nothing built yet', async () => {
    const metrics = await scrape(probe);
    expect(metrics.family('braid_builds_total').type).toBe('counter');
    for (const state of ['succeeded', 'failed', 'cancelled', 'timed_out'])
      expect(metrics.value('braid_builds_total', { state })).toBe(0);
    expect(metrics.family('braid_agents_connected').samples).toEqual([]);
    expect(metrics.family('braid_job_duration_seconds').type).toBe('histogram');
    expect(metrics.value('braid_context_received_bytes_total')).toBe(0);
    expect(metrics.value('braid_coordinator_info')).toBe(1);
    expect(metrics.family('braid_process_resident_memory_bytes').samples[0]?.value).toBeGreaterThan(
      0,
    );
  });

  it('answers HEAD without a body, refuses other methods, and 404s unknown paths', async () => {
    const head = await fetch(new URL('metrics', probe), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await head.text()).toBe('');
    const post = await fetch(new URL('metrics', probe), { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    const unknown = await fetch(new URL('debug/pprof', probe));
    expect(unknown.status).toBe(404);
    expect(await unknown.text()).toBe('not found: /debug/pprof\n');
  });

  it('counts context bytes received, then deduplicated when the client asks again', async () => {
    const client: BuildClient = createClient(BuildService, coordinator.address, {
      credentials: credentials.createInsecure(),
    });
    try {
      const tar = await contextTar();
      const digest = `sha256:${createHash('sha256').update(tar).digest('hex')}`;
      const before = await scrape(probe);
      await client.uploadContext([
        { payload: { case: 'header', value: { digest, sizeBytes: BigInt(tar.length) } } },
        { payload: { case: 'chunk', value: tar } },
      ]);
      const has = await client.hasContext({ digest });
      expect(has.present).toBe(true);
      const after = await scrape(probe);
      expect(
        after.value('braid_context_received_bytes_total') -
          before.value('braid_context_received_bytes_total'),
      ).toBe(tar.length);
      expect(
        after.value('braid_context_deduplicated_bytes_total') -
          before.value('braid_context_deduplicated_bytes_total'),
      ).toBe(tar.length);
    } finally {
      client.close();
    }
  });
});

describe('a submitted request id', () => {
  let coordinator: TestCoordinator;
  let client: BuildClient;
  beforeAll(async () => {
    coordinator = await startTestCoordinator('127.0.0.1:0');
    client = createClient(BuildService, coordinator.address, {
      credentials: credentials.createInsecure(),
    });
  });
  afterAll(async () => {
    client?.close();
    await coordinator?.stop();
  });

  it('is refused when malformed, naming it, and nothing is stored', async () => {
    const spec = {
      contextDigest: `sha256:${'c'.repeat(64)}`,
      platforms: [{ os: 'linux', architecture: 'amd64' }],
      tags: ['127.0.0.1:5000/team/app:1'],
    };
    const refused = await client.submitBuild({ spec, requestId: 'two words' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(RpcError);
    expect((refused as RpcError).code).toBe('invalid_argument');
    expect((refused as RpcError).message).toContain(
      'request id "two words": expected 1 to 64 of A-Z a-z 0-9 . _ : -',
    );
    expect((await client.listBuilds({})).builds).toEqual([]);
  });
});

describe('the coordinator probe while it drains', () => {
  let coordinator: TestCoordinator | undefined;
  let client: BuildClient | undefined;
  afterEach(async () => {
    client?.close();
    await coordinator?.stop('SIGKILL');
  });

  it('answers /readyz 503 naming the drain while a call finishes, and exits 0 after it', async () => {
    let probe: string;
    ({ coordinator, probe } = await startWithProbe(['--shutdown-grace-ms', '120000']));
    client = createClient(BuildService, coordinator.address, {
      credentials: credentials.createInsecure(),
    });
    const tar = await contextTar();
    const digest = `sha256:${createHash('sha256').update(tar).digest('hex')}`;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    async function* slowUpload() {
      yield {
        payload: { case: 'header' as const, value: { digest, sizeBytes: BigInt(tar.length) } },
      };
      await released;
      yield { payload: { case: 'chunk' as const, value: tar } };
    }
    const upload = client.uploadContext(slowUpload());
    // The upload is in the coordinator's hands once its temp file exists.
    const uploads = join(coordinator.dataDir, 'contexts', 'sha256');
    await waitFor(
      'the upload to start',
      async () =>
        existsSync(uploads) && readdirSync(uploads).some((f) => f.startsWith('.upload-'))
          ? true
          : undefined,
      15_000,
    );
    process.kill(coordinator.process.pid, 'SIGTERM');
    const draining = await waitFor(
      '/readyz to answer 503',
      async () => {
        const response = await fetch(new URL('readyz', probe));
        const body = await response.text();
        return response.status === 503 ? body : undefined;
      },
      15_000,
    );
    expect(draining).toBe('not ready: draining: the coordinator is stopping\n');
    const health = await fetch(new URL('healthz', probe));
    expect(health.status).toBe(200);
    expect((await scrape(probe)).value('braid_builds_total', { state: 'succeeded' })).toBe(0);
    release();
    expect((await upload).digest).toBe(digest);
    expect(await coordinator.process.exited).toEqual({ code: 0, signal: null });
  });
});

describe('the metrics listen setting', () => {
  let dir: string;
  let squatter: Server | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-metrics-'));
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => (squatter ? squatter.close(() => resolve()) : resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses an address that does not parse with one line naming it, exit 2', async () => {
    const result = await braid([
      'coordinator',
      '--listen',
      '127.0.0.1:0',
      '--data-dir',
      join(dir, 'a'),
      '--metrics-listen',
      'nowhere',
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      'braid: invalid config --metrics-listen: metrics listen address "nowhere": expected HOST:PORT, [IPv6]:PORT or unix:/path\n',
    );
  });

  it('names the address it cannot bind and exits 1 without serving gRPC', async () => {
    squatter = createServer();
    await new Promise<void>((resolve) => squatter?.listen(0, '127.0.0.1', resolve));
    const port = (squatter.address() as { port: number }).port;
    const result = await braid(
      [
        'coordinator',
        '--listen',
        '127.0.0.1:0',
        '--data-dir',
        join(dir, 'b'),
        '--log-level',
        'silent',
        '--metrics-listen',
        `127.0.0.1:${port}`,
      ],
      { env: { BRAID_METRICS_LISTEN: 'ignored-because-the-flag-wins' } },
    );
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(
      `braid: cannot listen on http://127.0.0.1:${port}/ for metrics: EADDRINUSE\n`,
    );
  });
});

describe('request ids in a database made before them', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-old-db-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps the old builds (with an empty request id) and stores new ones', async () => {
    const file = join(dir, 'braid.db');
    // The builds table as coordinators before request ids made it.
    const old = new Database(file);
    old.exec(`CREATE TABLE builds (
      id TEXT PRIMARY KEY, spec BLOB NOT NULL, state INTEGER NOT NULL,
      created_at INTEGER NOT NULL, finished_at INTEGER, index_descriptor BLOB,
      error TEXT NOT NULL DEFAULT '')`);
    const spec = create(BuildSpecSchema, { contextDigest: `sha256:${'c'.repeat(64)}` });
    old
      .prepare('INSERT INTO builds (id, spec, state, created_at) VALUES (?, ?, ?, ?)')
      .run('bold', Buffer.from(toBinary(BuildSpecSchema, spec)), BuildState.SUCCEEDED, 1000);
    old.close();

    const store = new SqliteBuildStore(file);
    try {
      const before = await store.getBuild('bold');
      expect(before?.requestId).toBe('');
      expect(before?.spec.contextDigest).toBe(spec.contextDigest);
      await store.commit([
        {
          kind: 'createBuild',
          build: {
            id: 'bnew',
            spec,
            state: BuildState.QUEUED,
            createdAt: new Date(2000),
            error: '',
            requestId: 'ci-run-42',
          },
          jobs: [],
        },
      ]);
      const fresh = await store.getBuild('bnew');
      expect(fresh ? buildToProto(fresh, []).requestId : undefined).toBe('ci-run-42');
    } finally {
      await store.close();
    }
    // Opening it again migrates nothing twice.
    const again = new SqliteBuildStore(file);
    expect((await again.getBuild('bnew'))?.requestId).toBe('ci-run-42');
    await again.close();
  });
});
