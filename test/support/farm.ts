/**
 * A real farm on loopback for tests: a coordinator process and agent
 * processes against the local engine, each stopped by its handle.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BRAID_BIN,
  braid,
  cleanEnv,
  startTestCoordinator,
  type TestCoordinator,
} from './braid-cli.js';
import { startProcess, type Started } from './process.js';

export interface TestAgent {
  readonly name: string;
  readonly process: Started;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startTestAgent(
  coordinator: string,
  name: string,
  extraArgs: string[] = [],
  extraEnv: Record<string, string> = {},
): Promise<TestAgent> {
  const dir = await mkdtemp(join(tmpdir(), `braid-agent-${name}-`));
  const proc = startProcess(
    process.execPath,
    [
      BRAID_BIN,
      'agent',
      '--coordinator',
      coordinator,
      '--name',
      name,
      '--build-network',
      'none',
      '--cache-dir',
      join(dir, 'cache'),
      '--log-format',
      'json',
      ...extraArgs,
    ],
    { env: cleanEnv(extraEnv) },
  );
  return {
    name,
    process: proc,
    async stop(signal = 'SIGTERM') {
      await proc.stop(signal, 15_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Wait until `braid agents` lists every name. */
export async function waitForAgents(
  coordinator: string,
  names: string[],
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const result = await braid(['agents', '--coordinator', coordinator, '--output', 'json']);
    last = result.stdout + result.stderr;
    if (result.code === 0) {
      const agents = result.stdout
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { name: string });
      if (names.every((n) => agents.some((a) => a.name === n))) return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`agents ${names.join(', ')} did not join within ${timeoutMs} ms: ${last}`);
}

/** What `braid status ID --output json` prints, as far as tests read it. */
export interface BuildStatusJson {
  state: string;
  index: { digest: string } | null;
  jobs: {
    platform: string;
    state: string;
    agent: string;
    attempt: number;
    image: { digest: string } | null;
  }[];
}

/** `braid status ID --output json`, or undefined when the call fails (e.g. no coordinator). */
export async function buildStatus(
  coordinator: string,
  id: string,
): Promise<BuildStatusJson | undefined> {
  const result = await braid(['status', id, '--coordinator', coordinator, '--output', 'json']);
  // status exits 1 for a build that failed, was cancelled or timed out, and still prints it.
  return (result.code === 0 || result.code === 1) && result.stdout.trim().startsWith('{')
    ? (JSON.parse(result.stdout) as BuildStatusJson)
    : undefined;
}

/** Poll `probe` until it yields a value, within a bound. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export { startTestCoordinator, type TestCoordinator };
