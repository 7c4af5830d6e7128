import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BRAID_BIN, braid, cleanEnv } from '../support/braid-cli.js';
import { requireEngine } from '../support/components.js';
import { startTestAgent, waitForAgents, type TestAgent } from '../support/farm.js';
import { startProcess, type Started } from '../support/process.js';

describe('an agent whose coordinator goes away', () => {
  let dir: string;
  let socket: string;
  let agent: TestAgent | undefined;
  const coordinators: Started[] = [];

  async function startCoordinatorAt(): Promise<Started> {
    const proc = startProcess(
      process.execPath,
      [
        BRAID_BIN,
        'coordinator',
        '--listen',
        `unix:${socket}`,
        '--data-dir',
        join(dir, 'data'),
        '--log-format',
        'json',
      ],
      { env: cleanEnv() },
    );
    coordinators.push(proc);
    await proc.waitForStdout(/^listening /m, 15_000);
    return proc;
  }

  beforeAll(async () => {
    await requireEngine();
    dir = await mkdtemp(join(tmpdir(), 'braid-reconnect-'));
    socket = join(dir, 'braid.sock');
  });
  afterAll(async () => {
    await agent?.stop();
    for (const c of coordinators) await c.stop('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reconnects with backoff when the coordinator comes back on the same address', async () => {
    const first = await startCoordinatorAt();
    agent = await startTestAgent(`unix:${socket}`, 'phoenix');
    await waitForAgents(`unix:${socket}`, ['phoenix']);
    await first.stop('SIGKILL');
    await rm(socket, { force: true });
    await startCoordinatorAt();
    await waitForAgents(`unix:${socket}`, ['phoenix'], 60_000);
    const logs = agent.process
      .stderr()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { msg: string });
    expect(logs.filter((l) => l.msg === 'joined the coordinator')).toHaveLength(2);
    expect(
      logs.some((l) => /session lost; reconnecting|coordinator ended the session/.test(l.msg)),
    ).toBe(true);
    const agents = await braid(['agents', '--coordinator', `unix:${socket}`]);
    expect(agents.stdout).toMatch(/^phoenix\s+linux\/amd64\s/m);
  });
});
