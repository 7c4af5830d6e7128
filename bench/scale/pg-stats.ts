/**
 * What a PostgreSQL store costs the database, read from outside the
 * coordinator: transactions and rows written to one database
 * (pg_stat_database), transactions that wrote (transaction ids assigned,
 * cluster-wide), WAL written by the cluster, and the CPU time of the
 * server's processes (/proc, the postmaster found by its port).
 */
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';

const TICKS_PER_SECOND = 100;

export interface PgWrites {
  /** Epoch ms. */
  at: number;
  /** Every committed transaction, reads included (xact_commit). */
  commits: number;
  /** Transactions that wrote: each is given a transaction id (cluster-wide). */
  writeTransactions: number;
  inserted: number;
  updated: number;
  deleted: number;
  walBytes: number;
}

/** The counters of the database `url` names; statistics lag by up to a second or so. */
export async function readPgWrites(url: string): Promise<PgWrites> {
  const client = new pg.Client({ connectionString: url, application_name: 'bench pg-stats' });
  await client.connect();
  try {
    // Counters are per backend until flushed: ask for a fresh snapshot of them.
    await client.query('SELECT pg_stat_clear_snapshot()');
    const { rows } = await client.query<{
      commits: string;
      inserted: string;
      updated: string;
      deleted: string;
      wal: string;
      xid: string;
    }>(
      `SELECT xact_commit AS commits, tup_inserted AS inserted, tup_updated AS updated,
              tup_deleted AS deleted, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS wal,
              -- The next transaction id, read without taking one.
              pg_snapshot_xmax(pg_current_snapshot())::text AS xid
         FROM pg_stat_database WHERE datname = current_database()`,
    );
    const row = rows[0];
    if (!row) throw new Error('pg_stat_database has no row for the database');
    return {
      at: Date.now(),
      commits: Number(row.commits),
      writeTransactions: Number(row.xid),
      inserted: Number(row.inserted),
      updated: Number(row.updated),
      deleted: Number(row.deleted),
      walBytes: Number(row.wal),
    };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** b - a, field by field; `at` is the window's length in seconds. */
export function pgWritesBetween(a: PgWrites, b: PgWrites): PgWrites {
  return {
    at: (b.at - a.at) / 1000,
    commits: b.commits - a.commits,
    writeTransactions: b.writeTransactions - a.writeTransactions,
    inserted: b.inserted - a.inserted,
    updated: b.updated - a.updated,
    deleted: b.deleted - a.deleted,
    walBytes: b.walBytes - a.walBytes,
  };
}

function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the comm start at field 3: ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds the PostgreSQL server on `port` has used: the postmaster
 * (with its reaped children's) and every live child (backends, writers).
 */
export function pgServerCpuSeconds(port: number): number {
  const pids = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
  const postmaster = pids.find((pid) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return argv[0]?.endsWith('postgres') && argv.join(' ').includes(` -p ${port} `);
    } catch {
      return false;
    }
  });
  if (postmaster === undefined) return NaN;
  let ticks = 0;
  const own = statFields(postmaster);
  if (own) ticks += Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const pid of pids) {
    const fields = statFields(pid);
    if (fields && Number(fields[1]) === postmaster)
      ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / TICKS_PER_SECOND;
}
