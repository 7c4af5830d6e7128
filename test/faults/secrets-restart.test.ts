/**
 * Secrets across a coordinator restart. The coordinator keeps secret values
 * in memory only: a job already running on an agent keeps its secrets (the
 * agent holds them and re-attaches the job), while a job that must be placed
 * after the restart fails and tells the user to resubmit — never a build
 * that runs without its secret.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { BRAID_BIN, braid, cleanEnv } from '../support/braid-cli.js';
import { requireCommand, requireEngine } from '../support/components.js';
import { recordFault, tagState } from '../support/fault-ledger.js';
import { startTestAgent, waitFor, waitForAgents, type TestAgent } from '../support/farm.js';
import { startProcess, type Started } from '../support/process.js';
import { freePort, startRegistry, type TestRegistry } from '../support/registry.js';
import { filesUnder } from '../support/files.js';

/** Reads the secret before and after the sleep: the step holds it for its whole run. */
const SECRET_DOCKERFILE = `ARG BASE
FROM \${BASE}
ARG EXPECTED_SHA256
ARG SLEEP=0
RUN --mount=type=secret,id=tok sum() { sha256sum < /run/secrets/tok | cut -d" " -f1; }; [ "$(sum)" = "$EXPECTED_SHA256" ] && sleep \${SLEEP} && [ "$(sum)" = "$EXPECTED_SHA256" ] && echo secret-ok > /checked
`;

const PLAIN_DOCKERFILE = `ARG BASE
FROM \${BASE}
ARG SLEEP=0
RUN sleep \${SLEEP} && echo ok > /ok
`;

const GONE =
  /the build's secrets \(tok\) are gone: the coordinator restarted, and it keeps secret values in memory only; resubmit the build/;

interface JobJson {
  platform: string;
  state: string;
  attempt: number;
  currentStep: string | null;
  error: string | null;
}
interface StatusJson {
  state: string;
  error: string | null;
  jobs: JobJson[];
}

const ENDED = new Set(['succeeded', 'failed', 'cancelled', 'timed_out']);

describe('secrets across a coordinator restart', () => {
  let registry: TestRegistry;
  let dir: string;
  let base: string;
  let skopeo: string;
  let started: Started[] = [];
  let agents: TestAgent[] = [];

  beforeAll(async () => {
    await requireEngine();
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    base = `${registry.host}/base/busybox:latest`;
    dir = await mkdtemp(join(tmpdir(), 'braid-secrets-restart-'));
    await mkdir(join(dir, 'secret-ctx'));
    await writeFile(join(dir, 'secret-ctx', 'Dockerfile'), SECRET_DOCKERFILE);
    await mkdir(join(dir, 'plain-ctx'));
    await writeFile(join(dir, 'plain-ctx', 'Dockerfile'), PLAIN_DOCKERFILE);
  });
  afterEach(async () => {
    for (const agent of agents) await agent.stop('SIGKILL');
    for (const proc of started) await proc.stop('SIGKILL');
    agents = [];
    started = [];
  });
  afterAll(async () => {
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A coordinator on `dataDir` and `address`: the same pair again is a restart. */
  async function startCoordinator(address: string, dataDir: string): Promise<Started> {
    const proc = startProcess(
      process.execPath,
      [
        BRAID_BIN,
        'coordinator',
        '--listen',
        address,
        '--data-dir',
        dataDir,
        '--log-format',
        'json',
      ],
      { env: cleanEnv() },
    );
    started.push(proc);
    await proc.waitForStdout(/^listening /m, 15_000);
    return proc;
  }

  /** A secret file with a value unique to this run; the build checks the value's hash. */
  async function secretFile(name: string): Promise<{ file: string; value: string }> {
    const value = `braid-restart-secret-${randomUUID()}`;
    const file = join(dir, name);
    await writeFile(file, value);
    return { file, value };
  }

  /** `braid build --detach`: the CLI leaves after the submit and prints the build id. */
  async function submit(address: string, context: string, tag: string, args: string[]) {
    const result = await braid(
      [
        'build',
        join(dir, context),
        '-t',
        tag,
        '--platform',
        'linux/amd64',
        '--build-arg',
        `BASE=${base}`,
        '--no-cache',
        '--detach',
        '--coordinator',
        address,
        ...args,
      ],
      { timeoutMs: 60_000 },
    );
    expect(result.code, result.stderr).toBe(0);
    const id = result.stdout.trim();
    expect(id).toMatch(/^b\S+$/);
    return { id, output: result.stdout + result.stderr };
  }

  /** `braid status ID`, plain and JSON (whatever its exit code: it prints ended builds too). */
  async function status(address: string, id: string) {
    const plain = await braid(['status', id, '--coordinator', address]);
    const json = await braid(['status', id, '--coordinator', address, '--output', 'json']);
    const parsed = json.stdout.trim().startsWith('{')
      ? (JSON.parse(json.stdout) as StatusJson)
      : undefined;
    return { plain: plain.stdout, json: parsed };
  }

  const ended = (address: string, id: string, timeoutMs: number) =>
    waitFor(
      `build ${id} to end`,
      async () => {
        const { json, plain } = await status(address, id);
        return json && ENDED.has(json.state) ? { json, plain } : undefined;
      },
      timeoutMs,
    );

  it('a running --secret step survives the restart: the agent re-attaches, the build succeeds, the value is stored nowhere', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const dataDir = join(dir, 'data-running');
    const first = await startCoordinator(address, dataDir);
    const agent = await startTestAgent(address, 'sr1');
    agents.push(agent);
    await waitForAgents(address, ['sr1']);

    const secret = await secretFile('running.secret');
    const tag = `${registry.host}/team/secret-running:1`;
    const submitted = await submit(address, 'secret-ctx', tag, [
      '--secret',
      `id=tok,src=${secret.file}`,
      '--build-arg',
      `EXPECTED_SHA256=${createHash('sha256').update(secret.value).digest('hex')}`,
      '--build-arg',
      'SLEEP=8',
    ]);

    // Kill -9 while the step that mounted the secret sleeps.
    const before = await waitFor(
      'the secret step to run',
      async () => {
        const job = (await status(address, submitted.id)).json?.jobs[0];
        return job?.state === 'running' && /RUN --mount=type=secret/.test(job.currentStep ?? '')
          ? job
          : undefined;
      },
      120_000,
    );
    expect(before.attempt).toBe(1);
    await first.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    const second = await startCoordinator(address, dataDir);

    const after = await ended(address, submitted.id, 180_000);
    const state = await tagState(skopeo, tag, ['linux/amd64']);
    const succeededLines = agent.process
      .stderr()
      .split('\n')
      .filter((l) => l.includes('"job succeeded"')).length;
    await recordFault({
      fault: 'coordinator SIGKILLed while a --secret step runs',
      attempted: 1,
      succeeded: after.json.state === 'succeeded' && state === 'complete' ? 1 : 0,
      failedCleanly: 0,
      incompleteTagMoves: state === 'incomplete' ? 1 : 0,
      rebuiltAfterRestart: Math.max(0, succeededLines - 1),
    });
    expect(after.json.state, after.plain).toBe('succeeded');
    // Re-attached, not re-run: the step that had the secret is the one that finished.
    expect(after.json.jobs.map((j) => [j.state, j.attempt])).toEqual([['succeeded', 1]]);
    expect(succeededLines).toBe(1);
    expect(second.stderr()).toContain('recovered builds in flight');
    expect(state).toBe('complete');

    // The value is in no file of the data dir, and no output of any process.
    const files = await filesUnder(dataDir);
    expect(files.length).toBeGreaterThan(0);
    const encoded = Buffer.from(secret.value).toString('base64');
    for (const file of files) {
      const bytes = await readFile(file);
      expect(bytes.includes(secret.value), file).toBe(false);
      expect(bytes.includes(encoded), file).toBe(false);
    }
    const outputs = [
      submitted.output,
      after.plain,
      first.stdout() + first.stderr(),
      second.stdout() + second.stderr(),
      agent.process.stdout() + agent.process.stderr(),
    ];
    for (const text of outputs) expect(text).not.toContain(secret.value);
  });

  it('a --secret job still queued at the restart fails, telling the user to resubmit, and moves no tag', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const dataDir = join(dir, 'data-queued');
    const first = await startCoordinator(address, dataDir);
    // One slot: while it is taken, the next linux/amd64 job waits in the queue.
    const agent = await startTestAgent(address, 'sq1', ['--capacity', '1']);
    agents.push(agent);
    await waitForAgents(address, ['sq1']);

    const busyTag = `${registry.host}/team/occupier:1`;
    const busy = await submit(address, 'plain-ctx', busyTag, ['--build-arg', 'SLEEP=12']);
    await waitFor(
      'the occupying build to take the slot',
      async () => {
        const job = (await status(address, busy.id)).json?.jobs[0];
        return job && job.state !== 'queued' ? job : undefined;
      },
      60_000,
    );
    const secret = await secretFile('queued.secret');
    const tag = `${registry.host}/team/secret-queued:1`;
    const waiting = await submit(address, 'secret-ctx', tag, [
      '--secret',
      `id=tok,src=${secret.file}`,
      '--build-arg',
      `EXPECTED_SHA256=${createHash('sha256').update(secret.value).digest('hex')}`,
    ]);
    const queued = await status(address, waiting.id);
    expect(queued.json?.jobs.map((j) => j.state)).toEqual(['queued']);

    await first.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    const second = await startCoordinator(address, dataDir);

    // The occupier was running on the agent: it carries on and frees the slot.
    const occupier = await ended(address, busy.id, 180_000);
    expect(occupier.json.state, occupier.plain).toBe('succeeded');
    // Then the secret build's job must be placed, by a coordinator that never had its value.
    const after = await ended(address, waiting.id, 60_000);
    const state = await tagState(skopeo, tag, ['linux/amd64']);
    await recordFault({
      fault: 'coordinator restarted before a --secret job was placed',
      attempted: 1,
      succeeded: after.json.state === 'succeeded' ? 1 : 0,
      failedCleanly: after.json.state === 'failed' && state === 'absent' ? 1 : 0,
      incompleteTagMoves: state === 'incomplete' ? 1 : 0,
      rebuiltAfterRestart: 0,
    });
    expect(after.json.state, after.plain).toBe('failed');
    expect(after.json.jobs.map((j) => j.state)).toEqual(['failed']);
    expect(after.json.jobs[0]?.error).toMatch(GONE);
    expect(after.json.error).toMatch(GONE);
    // What a user reads in `braid status`.
    expect(after.plain).toMatch(/^state\s+failed$/m);
    expect(after.plain).toMatch(new RegExp(`^error\\s+linux/amd64: ${GONE.source}`, 'm'));
    expect(state).toBe('absent');
    // No step ran without its secret: the agent never got the job.
    expect(agent.process.stderr()).not.toContain(`${waiting.id}-1`);

    const outputs = [
      waiting.output,
      after.plain,
      first.stdout() + first.stderr(),
      second.stdout() + second.stderr(),
      agent.process.stdout() + agent.process.stderr(),
    ];
    for (const text of outputs) expect(text).not.toContain(secret.value);
    for (const file of await filesUnder(dataDir))
      expect((await readFile(file)).includes(secret.value), file).toBe(false);
  });
});
