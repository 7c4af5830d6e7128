/**
 * The faults suite's ledger: each fault test records what it saw (builds
 * attempted, succeeded, failed cleanly, tags moved to incomplete indexes,
 * finished jobs rebuilt after a restart), and the suite prints the table.
 */
import { appendFile, mkdir, readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from './process.js';

export const LEDGER = fileURLToPath(new URL('../../.test-results/faults.jsonl', import.meta.url));

export interface FaultOutcome {
  fault: string;
  attempted: number;
  succeeded: number;
  /** Ended failed/cancelled/timed out with no tag moved. */
  failedCleanly: number;
  /** Tags that point at an index missing a requested platform: must be 0. */
  incompleteTagMoves: number;
  /** Jobs that had finished before a coordinator restart and ran again: must be 0. */
  rebuiltAfterRestart: number;
}

export async function recordFault(outcome: FaultOutcome): Promise<void> {
  await mkdir(dirname(LEDGER), { recursive: true });
  await appendFile(LEDGER, `${JSON.stringify(outcome)}\n`);
}

/** What a tag points at: nothing, an index with every platform, or one missing some. */
export async function tagState(
  skopeo: string,
  ref: string,
  platforms: readonly string[],
  dockerConfig?: string,
): Promise<'absent' | 'complete' | 'incomplete'> {
  const auth = dockerConfig ? ['--authfile', `${dockerConfig}/config.json`] : [];
  const raw = await run(skopeo, [
    'inspect',
    '--raw',
    '--tls-verify=false',
    ...auth,
    `docker://${ref}`,
  ]);
  if (raw.code !== 0) return 'absent';
  const index = JSON.parse(raw.stdout) as {
    manifests?: { platform?: { os: string; architecture: string; variant?: string } }[];
  };
  const have = new Set(
    (index.manifests ?? []).map((m) =>
      [m.platform?.os, m.platform?.architecture, m.platform?.variant].filter(Boolean).join('/'),
    ),
  );
  return platforms.every((p) => have.has(p)) ? 'complete' : 'incomplete';
}

export async function readLedger(): Promise<FaultOutcome[]> {
  try {
    return (await readFile(LEDGER, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as FaultOutcome);
  } catch {
    return [];
  }
}

export async function clearLedger(): Promise<void> {
  await rm(LEDGER, { force: true });
}
