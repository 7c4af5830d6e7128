/**
 * The real `braid` binary (bin/braid.js over dist/), run as users run it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, startProcess, type Started } from './process.js';

export const BRAID_BIN = fileURLToPath(new URL('../../bin/braid.js', import.meta.url));

/**
 * An environment without the developer's own BRAID_* settings, whose caches
 * (the arch guard's passes) go to the temp dir instead of the user's home.
 */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BRAID_')) env[k] = v;
  env.XDG_CACHE_HOME = join(tmpdir(), 'braid-test-cache');
  return { ...env, ...extra };
}

export function braid(
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
) {
  return run(process.execPath, [BRAID_BIN, ...args], {
    env: cleanEnv(options.env),
    timeoutMs: options.timeoutMs ?? 30_000,
  });
}

export interface TestCoordinator {
  readonly address: string;
  readonly process: Started;
  readonly dataDir: string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startTestCoordinator(
  listen = '127.0.0.1:0',
  extraArgs: string[] = [],
  extraEnv: Record<string, string> = {},
): Promise<TestCoordinator> {
  const dir = await mkdtemp(join(tmpdir(), 'braid-coord-'));
  const dataDir = join(dir, 'data');
  const listenArg = listen.replace('%DIR%', dir);
  const proc = startProcess(
    process.execPath,
    [
      BRAID_BIN,
      'coordinator',
      '--listen',
      listenArg,
      '--data-dir',
      dataDir,
      '--log-format',
      'json',
      ...extraArgs,
    ],
    { env: cleanEnv(extraEnv) },
  );
  const match = await proc.waitForStdout(/^listening (\S+)$/m, 15_000);
  return {
    address: match[1] ?? '',
    process: proc,
    dataDir,
    async stop(signal = 'SIGTERM') {
      await proc.stop(signal, 10_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
