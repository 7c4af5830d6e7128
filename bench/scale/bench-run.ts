/**
 * What every run of bench:scale and bench:failover shares: a loopback
 * registry, a PostgreSQL cluster when asked for, the processes it started
 * (stopped by pid), a work dir removed at the end unless kept,
 * a cleanup that runs once whatever ends the run (its end, a failure, a
 * signal, the global deadline), and the deadline that fails it loudly.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type PostgresCluster } from '../../test/support/postgres.js';
import { startRegistry, type TestRegistry } from '../../test/support/registry.js';
import type { Child } from './processes.js';

export interface BenchRun {
  readonly workDir: string;
  /** Processes running now; each is stopped at cleanup unless it was removed first. */
  readonly started: Set<Child>;
  /** Epoch ms after which the bench fails. */
  readonly deadline: number;
  readonly registry: TestRegistry;
  /** Set when started with `postgres`. */
  readonly postgres: PostgresCluster | undefined;
  /** Stop everything, once; later calls wait for the first. */
  cleanup(): Promise<void>;
}

export async function startBenchRun(options: {
  name: string;
  deadlineMs: number;
  keep: boolean;
  /** Start a PostgreSQL cluster too. */
  postgres: boolean;
  log: (text: string) => void;
}): Promise<BenchRun> {
  const { log } = options;
  const workDir = await mkdtemp(join(tmpdir(), `braid-bench-${options.name}-`));
  const started = new Set<Child>();
  let registry: TestRegistry | undefined;
  let postgres: PostgresCluster | undefined;
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      clearTimeout(watchdog);
      for (const child of started) await child.stop(5000).catch(() => undefined);
      await registry?.stop().catch(() => undefined);
      await postgres?.stop().catch(() => undefined);
      if (options.keep) log(`logs kept in ${workDir}`);
      else await rm(workDir, { recursive: true, force: true });
    })());
  // A failure anywhere stops what was started before the process ends.
  for (const event of ['unhandledRejection', 'uncaughtException'] as const)
    process.once(event, (err: unknown) => {
      log(`${event}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      void cleanup().finally(() => process.exit(1));
    });
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      log(`${signal}: stopping what the bench started`);
      void cleanup().finally(() => process.exit(130));
    });
  // The global deadline fails the bench loudly, whatever is running.
  const watchdog = setTimeout(() => {
    log(`GLOBAL DEADLINE: not done within ${options.deadlineMs / 60_000} min; stopping everything`);
    void cleanup().finally(() => process.exit(1));
  }, options.deadlineMs);
  const deadline = Date.now() + options.deadlineMs;
  try {
    registry = await startRegistry();
    if (options.postgres) postgres = await startPostgres();
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { workDir, started, deadline, registry, postgres, cleanup };
}
