/**
 * `braid coordinator --store postgres://...`: a farm whose builds live in a
 * real PostgreSQL cluster. A build runs end to end, its rows are read back
 * from the database itself, and a second coordinator with an empty data dir
 * on the same database serves the finished build (status and logs). Tokens
 * made with `braid tokens --store` work on every coordinator of the database.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { braid, startTestCoordinator } from '../support/braid-cli.js';
import { startOneBoxFarm, type OneBoxFarm } from '../support/one-box-farm.js';
import { startPostgres, type PostgresCluster } from '../support/postgres.js';

describe('the coordinator on a PostgreSQL store', () => {
  let postgres: PostgresCluster;
  let url: string;
  let farm: OneBoxFarm;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'braid-pg-refused-'));
    postgres = await startPostgres();
    url = await postgres.createDatabase('braid_farm');
    farm = await startOneBoxFarm({
      qemu: 'qemu-aarch64',
      agentName: 'pg1',
      name: 'postgres-store',
      coordinatorArgs: ['--store', url],
    });
  }, 600_000);

  afterAll(async () => {
    await farm?.stop();
    await postgres?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('takes a build submitted through a standby: stored there, built by the leader, followed on the standby', async () => {
    // The farm's coordinator leads; this one, on the same database, stands by.
    const standby = await startTestCoordinator('127.0.0.1:0', ['--store', url]);
    try {
      const refused = await braid(['agents', '--coordinator', standby.address]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('standby coordinator: the leader is');
      const tag = `${farm.registry.host}/team/pg-standby:1`;
      // Only the standby's address: the CLI uploads, submits and follows there.
      const built = await braid(
        [
          'build',
          farm.dir,
          '-t',
          tag,
          '--platform',
          'linux/amd64',
          '--progress',
          'json',
          '--coordinator',
          standby.address,
        ],
        { timeoutMs: 300_000 },
      );
      expect(built.code, built.stderr).toBe(0);
      const events = built.stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { sequence: string; type: string; agent?: string });
      // Every event once, in order, from the queued one the standby stored to the end.
      expect(events.map((e) => Number(e.sequence))).toEqual(events.map((_, i) => i + 1));
      expect(events.some((e) => e.type === 'job-state' && e.agent === 'pg1')).toBe(true);
      const index = await farm.raw<{ manifests: { platform?: { architecture: string } }[] }>(tag);
      expect(index.manifests.map((m) => m.platform?.architecture)).toContain('amd64');
      expect(farm.coordinator.process.stdout() + farm.coordinator.process.stderr()).toContain(
        'build submitted through a standby',
      );
    } finally {
      await standby.stop();
    }
  });

  it('stores a build, its jobs and its events in the database, and another coordinator serves them', async () => {
    const tag = `${farm.registry.host}/team/pg-store:1`;
    const built = await braid(
      [
        'build',
        farm.dir,
        '-t',
        tag,
        '--platform',
        'linux/amd64,linux/arm64',
        '--progress',
        'plain',
        '--coordinator',
        farm.coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(built.code, built.stderr).toBe(0);
    const index = await farm.raw<{ manifests: { platform?: { architecture: string } }[] }>(tag);
    // Provenance attestations are entries too, of platform unknown/unknown.
    const platforms = index.manifests.map((m) => m.platform?.architecture);
    expect(platforms.filter((a) => a !== 'unknown').sort()).toEqual(['amd64', 'arm64']);
    const listed = await braid([
      'builds',
      '--output',
      'json',
      '--coordinator',
      farm.coordinator.address,
    ]);
    expect(listed.code, listed.stderr).toBe(0);
    // JSON lines, newest first.
    const [build] = listed.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { id: string; state: string });
    expect(build?.state).toBe('succeeded');
    const id = build?.id ?? '';

    // The database itself holds the build, both jobs and the event log.
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const builds = await client.query<{ state: number }>(
        'SELECT state FROM builds WHERE id = $1',
        [id],
      );
      expect(builds.rows).toHaveLength(1);
      const jobs = await client.query<{ agent: string }>(
        'SELECT agent FROM jobs WHERE build_id = $1',
        [id],
      );
      expect(jobs.rows.map((r) => r.agent)).toEqual(['pg1', 'pg1']);
      const events = await client.query<{ n: string }>(
        'SELECT COUNT(*) AS n FROM build_events WHERE build_id = $1',
        [id],
      );
      expect(Number(events.rows[0]?.n)).toBeGreaterThan(5);
    } finally {
      await client.end();
    }

    // A coordinator with nothing in its data dir, on the same database.
    await farm.coordinator.stop();
    const second = await startTestCoordinator('127.0.0.1:0', ['--store', url]);
    try {
      const status = await braid([
        'status',
        id,
        '--output',
        'json',
        '--coordinator',
        second.address,
      ]);
      expect(status.code, status.stderr).toBe(0);
      const shown = JSON.parse(status.stdout) as { state: string; index?: { digest: string } };
      expect(shown.state).toBe('succeeded');
      expect(shown.index?.digest).toMatch(/^sha256:/);
      const logs = await braid(['logs', id, '--coordinator', second.address]);
      expect(logs.code, logs.stderr).toBe(0);
      expect(logs.stdout).toContain('pushed');
    } finally {
      await second.stop();
    }
  });

  it('keeps tokens in the database: every coordinator honours them, and a revocation ends them on all', async () => {
    const shared = await postgres.createDatabase('braid_tokens');
    const coordinators = [
      await startTestCoordinator('127.0.0.1:0', ['--store', shared, '--require-auth']),
      await startTestCoordinator('127.0.0.1:0', ['--store', shared, '--require-auth']),
    ];
    try {
      // No data dir, no coordinator: `braid tokens` goes to the store itself.
      const created = await braid(['tokens', 'create', '--kind', 'api', '--name', 'ci'], {
        env: { BRAID_STORE: shared },
      });
      expect(created.code, created.stderr).toBe(0);
      const token = created.stdout.trim();
      expect(token).toMatch(/^braid_api_/);
      const list = (address: string) =>
        braid(['builds', '--output', 'json', '--coordinator', address, '--token', token]);
      // One leads and the other stands by; both check the token (a standby serves reads).
      for (const c of coordinators) {
        const listed = await list(c.address);
        expect(listed.code, listed.stderr).toBe(0);
      }
      const listedTokens = await braid(['tokens', 'list', '--store', shared, '--output', 'json']);
      expect(listedTokens.code, listedTokens.stderr).toBe(0);
      expect(listedTokens.stdout).toContain('"name":"ci"');
      expect(listedTokens.stdout).not.toContain(token.slice(10));
      const revoked = await braid(['tokens', 'revoke', 'ci', '--store', shared]);
      expect(revoked.code, revoked.stderr).toBe(0);
      for (const c of coordinators) {
        // Notified within milliseconds; allow a loaded machine a few seconds.
        let refused = await list(c.address);
        for (let i = 0; i < 50 && refused.code === 0; i++) {
          await new Promise((r) => setTimeout(r, 100));
          refused = await list(c.address);
        }
        expect(refused.code).toBe(1);
        expect(refused.stderr).toMatch(/token "ci" \(braid_api_\S+\) was revoked/);
      }
    } finally {
      await Promise.all(coordinators.map((c) => c.stop()));
    }
  });

  it('refuses a store that is not a PostgreSQL URL in one line, hiding its password', async () => {
    const refused = await braid([
      'coordinator',
      '--listen',
      '127.0.0.1:0',
      '--data-dir',
      dataDir,
      '--store',
      'mysql://braid:hunter2@127.0.0.1/braid',
    ]);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toContain('mysql://braid:***@127.0.0.1/braid');
    expect(refused.stderr).not.toContain('hunter2');
  });

  it('fails to start in one line naming the store when the database refuses the login', async () => {
    const wrong = url.replace(/\/\/([^:]+):[^@]+@/, '//$1:wrong-password@');
    const refused = await braid([
      'coordinator',
      '--listen',
      '127.0.0.1:0',
      '--data-dir',
      dataDir,
      '--store',
      wrong,
    ]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('password authentication failed');
    expect(refused.stderr).toContain(':***@');
    expect(refused.stderr).not.toContain('wrong-password');
  });
});
