/**
 * A real PostgreSQL cluster for one test suite: `initdb` into a temp dir,
 * `pg_ctl start` on a free 127.0.0.1 port with its socket in that dir, as
 * the unprivileged `postgres` user when the tests run as root (PostgreSQL
 * refuses to run as root). The superuser `braid` has a random password, so
 * URLs carry one as production ones do. stop() stops the server and removes
 * the dir. PostgreSQL missing fails the suite with how to install it.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chown, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { MissingComponentError } from './components.js';

const exec = promisify(execFile);

const POSTGRES_ROOT = '/usr/lib/postgresql';
const COMPONENT = 'PostgreSQL server (Debian package postgresql)';

export interface PostgresCluster {
  /** postgres://braid:<password>@127.0.0.1:<port>/braid?sslmode=disable */
  url: string;
  port: number;
  user: string;
  password: string;
  /** A new empty database on the cluster, as a URL (each test its own). */
  createDatabase(name?: string): Promise<string>;
  /** The server stopped (pg_ctl stop -m fast: every session cut), its data kept. */
  down(): Promise<void>;
  /** The server started again on the same port, after down(). */
  up(): Promise<void>;
  /** pg_ctl stop -m fast, then the dir is removed. Idempotent. */
  stop(): Promise<void>;
}

/** The newest installed server's bin dir, e.g. /usr/lib/postgresql/15/bin. */
export async function requirePostgres(): Promise<string> {
  let versions: string[] = [];
  try {
    versions = (await readdir(POSTGRES_ROOT)).filter((v) => /^\d+$/.test(v));
  } catch {
    // No PostgreSQL at all: reported below.
  }
  for (const version of versions.sort((a, b) => Number(b) - Number(a))) {
    const bin = join(POSTGRES_ROOT, version, 'bin');
    try {
      await access(join(bin, 'initdb'));
      await access(join(bin, 'pg_ctl'));
      return bin;
    } catch {
      // A client-only version dir: try the next.
    }
  }
  throw new MissingComponentError(COMPONENT, `no ${POSTGRES_ROOT}/<version>/bin/initdb`);
}

export async function startPostgres(): Promise<PostgresCluster> {
  const bin = await requirePostgres();
  const asRoot = process.getuid?.() === 0;
  let owner: { uid: number; gid: number } | undefined;
  if (asRoot) {
    try {
      const uid = Number((await exec('id', ['-u', 'postgres'])).stdout.trim());
      const gid = Number((await exec('id', ['-g', 'postgres'])).stdout.trim());
      owner = { uid, gid };
    } catch {
      throw new MissingComponentError(
        COMPONENT,
        'the tests run as root and there is no `postgres` user to run the server as',
      );
    }
  }
  const dir = await mkdtemp(join(tmpdir(), 'braid-pg-'));
  const data = join(dir, 'data');
  const log = join(dir, 'server.log');
  const user = 'braid';
  const password = randomBytes(12).toString('hex');
  const port = await freePort();
  // As the server's user, from its dir (postgres cannot read the cwd of root's shell).
  const run = (command: string, args: string[]) =>
    exec(
      asRoot ? 'runuser' : join(bin, command),
      asRoot ? ['-u', 'postgres', '--', join(bin, command), ...args] : args,
      {
        cwd: dir,
        timeout: 60_000,
      },
    );
  let started = false;
  const serverStart = () =>
    run('pg_ctl', [
      'start',
      '-D',
      data,
      '-l',
      log,
      '-w',
      '-t',
      '30',
      '-o',
      `-c listen_addresses=127.0.0.1 -p ${port} -c unix_socket_directories=${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off`,
    ]);
  const serverStop = () => run('pg_ctl', ['stop', '-D', data, '-m', 'fast', '-w', '-t', '30']);
  const stop = async () => {
    if (started) {
      started = false;
      await serverStop().catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    if (owner) await chown(dir, owner.uid, owner.gid);
    const pwfile = join(dir, 'pwfile');
    await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
    if (owner) await chown(pwfile, owner.uid, owner.gid);
    await run('initdb', [
      '-D',
      data,
      '-U',
      user,
      `--pwfile=${pwfile}`,
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      '--encoding=UTF8',
      '--locale=C',
      '--no-sync',
    ]);
    await rm(pwfile);
    await serverStart();
    started = true;
  } catch (err) {
    const tail = await readFile(log, 'utf8').catch(() => '');
    await stop();
    throw new Error(
      `PostgreSQL (${bin}) did not start on 127.0.0.1:${port}: ${(err as Error).message}\n${tail.slice(-2000)}`,
      { cause: err },
    );
  }
  const urlOf = (database: string) =>
    `postgres://${user}:${password}@127.0.0.1:${port}/${database}?sslmode=disable`;
  let databases = 0;
  const createDatabase = async (name = `braid_${process.pid}_${++databases}`) => {
    const client = new pg.Client({ connectionString: urlOf('postgres') });
    await client.connect();
    try {
      await client.query(`CREATE DATABASE "${name}"`);
    } finally {
      await client.end();
    }
    return urlOf(name);
  };
  let url: string;
  try {
    url = await createDatabase('braid');
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    port,
    user,
    password,
    createDatabase,
    async down() {
      await serverStop();
    },
    async up() {
      await serverStart();
    },
    stop,
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
