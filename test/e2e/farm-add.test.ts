/**
 * `braid farm add|ls|remove` against a real sshd on 127.0.0.1 (key and
 * known_hosts made by the test), a real coordinator and the local engine:
 * the agent bundle is copied into a temporary prefix, where no
 * node_modules exists, and runs there under braid's supervisor.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { access, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';
import { requireEngine } from '../support/components.js';
import { waitFor } from '../support/farm.js';
import { startSshd, type TestSshd } from '../support/sshd.js';

interface AgentJson {
  name: string;
  native: string | null;
  labels: Record<string, string>;
  connectedAt: string | null;
}

interface TokenJson {
  name: string;
  kind: string;
  state: string;
}

/** Alive and not a zombie (an exited process nobody has reaped yet is gone for our purposes). */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  return stat !== '' && state !== 'Z';
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function pidIn(file: string): Promise<number> {
  return Number((await readFile(file, 'utf8')).trim());
}

describe('braid farm installs, lists and removes an agent over SSH', () => {
  let sshd: TestSshd;
  let coordinator: TestCoordinator;
  let dir: string;
  let prefix: string;
  let farmFile: string;
  const name = `farm-e2e-${randomBytes(3).toString('hex')}`;
  /** Every supervisor and agent pid seen, stopped in afterAll whatever happened. */
  const seenPids = new Set<number>();

  const hostArgs = () => [
    '--coordinator',
    coordinator.address,
    '--farm-file',
    farmFile,
    '--ssh-key',
    sshd.clientKey,
    '--ssh-known-hosts',
    sshd.knownHosts,
  ];
  const addArgs = () => [
    'farm',
    'add',
    sshd.url,
    '--name',
    name,
    '--prefix',
    prefix,
    '--no-systemd',
    '--data-dir',
    coordinator.dataDir,
    '--labels',
    'site=e2e,rack=r1',
    '--agent-setting',
    'build-network=none',
    ...hostArgs(),
  ];
  const listAgents = async (): Promise<AgentJson[]> => {
    const result = await braid([
      'agents',
      '--coordinator',
      coordinator.address,
      '--output',
      'json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as AgentJson);
  };
  const listTokens = async (): Promise<TokenJson[]> => {
    const result = await braid([
      'tokens',
      'list',
      '--data-dir',
      coordinator.dataDir,
      '--output',
      'json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as TokenJson);
  };
  const processPids = async (): Promise<{ supervisor: number; agent: number }> => {
    const supervisor = await pidIn(join(prefix, 'run', 'supervisor.pid'));
    const agent = await pidIn(join(prefix, 'run', 'agent.pid'));
    seenPids.add(supervisor);
    seenPids.add(agent);
    return { supervisor, agent };
  };

  beforeAll(async () => {
    await requireEngine();
    dir = await mkdtemp(join(tmpdir(), 'braid-farm-e2e-'));
    prefix = join(dir, 'opt', 'braid');
    farmFile = join(dir, 'farm.json');
    sshd = await startSshd();
    coordinator = await startTestCoordinator();
  });

  afterAll(async () => {
    // The supervised agent is no child of this process: its pids are in its files.
    for (const file of ['supervisor.pid', 'agent.pid']) {
      const pid = await pidIn(join(prefix ?? '/nonexistent', 'run', file)).catch(() => 0);
      if (pid > 0) seenPids.add(pid);
    }
    for (const pid of seenPids) {
      if (await alive(pid)) process.kill(pid, 'SIGKILL');
    }
    await coordinator?.stop();
    await sshd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('installs the agent into the prefix; it joins and braid agents lists its native platform', async () => {
    const added = await braid(addArgs(), { timeoutMs: 180_000 });
    expect(added.code, added.stderr).toBe(0);
    expect(added.stdout).toContain(
      `agent ${name}: installed on ${sshd.url} (supervised, ${prefix})`,
    );
    expect(added.stdout).toMatch(new RegExp(`agent ${name}: connected; native linux/amd64`));
    expect(added.stderr).toContain(`created join token "farm-${name}"`);

    const agent = (await listAgents()).find((a) => a.name === name);
    expect(agent?.native).toBe('linux/amd64');
    expect(agent?.labels).toMatchObject({ site: 'e2e', rack: 'r1' });

    const { supervisor, agent: agentPid } = await processPids();
    expect(await alive(supervisor)).toBe(true);
    expect(await alive(agentPid)).toBe(true);
    // The bundle runs from the prefix alone.
    const cmdline = (await readFile(`/proc/${agentPid}/cmdline`, 'utf8')).split('\0');
    expect(cmdline).toContain(join(prefix, 'lib', 'cli.mjs'));
    const env = await readFile(join(prefix, 'etc', 'agent.env'), 'utf8');
    expect(env).toContain(`BRAID_NAME='${name}'`);
    expect(env).toMatch(/^BRAID_JOIN_TOKEN='braid_join_[a-z2-7]{52}'$/m);

    const token = (await listTokens()).find((t) => t.name === `farm-${name}`);
    expect(token).toMatchObject({ kind: 'join', state: 'active' });
  });

  it('says "unchanged" when added again with the same inputs, and restarts nothing', async () => {
    const before = await processPids();
    const envBefore = await readFile(join(prefix, 'etc', 'agent.env'), 'utf8');

    const again = await braid(addArgs(), { timeoutMs: 180_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`agent ${name}: unchanged on ${sshd.url}`);
    expect(again.stderr).not.toContain('copying the agent bundle');

    expect(await processPids()).toEqual(before);
    expect(await readFile(join(prefix, 'etc', 'agent.env'), 'utf8')).toBe(envBefore);
    expect((await listTokens()).filter((t) => t.name === `farm-${name}`)).toHaveLength(1);
  });

  it('restarts an agent that dies: the supervisor starts another, which joins again', async () => {
    const before = await processPids();
    const joinedAt = (await listAgents()).find((a) => a.name === name)?.connectedAt;
    expect(joinedAt).toBeTruthy();

    process.kill(before.agent, 'SIGKILL');
    const restarted = await waitFor('the supervisor to start another agent', async () => {
      const pid = await pidIn(join(prefix, 'run', 'agent.pid')).catch(() => 0);
      return pid > 0 && pid !== before.agent && (await alive(pid)) ? pid : undefined;
    });
    seenPids.add(restarted);
    expect(await alive(before.supervisor)).toBe(true);
    const rejoined = await waitFor('the new agent to join', async () => {
      const agent = (await listAgents()).find((a) => a.name === name);
      return agent && agent.connectedAt !== joinedAt ? agent : undefined;
    });
    expect(rejoined.native).toBe('linux/amd64');
    const log = await readFile(join(prefix, 'log', 'agent.log'), 'utf8');
    expect(log).toMatch(/braid farm supervisor: agent exited 137; restarting in 1 s/);
  });

  it('lists the host with its agent as the coordinator sees it', async () => {
    const listed = await braid(['farm', 'ls', ...hostArgs().slice(0, 4), '--output', 'json']);
    expect(listed.code, listed.stderr).toBe(0);
    const rows = listed.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(rows).toEqual([
      expect.objectContaining({
        name,
        host: sshd.url,
        prefix,
        service: 'supervised',
        connected: true,
        native: 'linux/amd64',
        joinToken: `farm-${name}`,
      }),
    ]);

    const table = await braid(['farm', 'ls', ...hostArgs().slice(0, 4)]);
    expect(table.code, table.stderr).toBe(0);
    const line = table.stdout.split('\n').find((l) => l.startsWith(name)) ?? '';
    expect(line.split(/\s+/).slice(0, 5)).toEqual([
      name,
      sshd.url,
      'supervised',
      'yes',
      'linux/amd64',
    ]);
  });

  it('removes it: drains and stops the agent, the coordinator drops it, files and token go', async () => {
    const { supervisor, agent } = await processPids();

    const removed = await braid(['farm', 'remove', name, ...hostArgs()], { timeoutMs: 180_000 });
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toContain(`agent ${name}: removed from ${sshd.url} (drained`);
    expect(removed.stdout).toContain(`join token "farm-${name}" revoked`);

    expect(await alive(agent)).toBe(false);
    expect(await alive(supervisor)).toBe(false);
    expect((await listAgents()).map((a) => a.name)).not.toContain(name);
    expect(await exists(prefix)).toBe(false);
    expect((await listTokens()).find((t) => t.name === `farm-${name}`)?.state).toBe('revoked');

    const listed = await braid(['farm', 'ls', ...hostArgs().slice(0, 4), '--output', 'json']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toBe('');
  });

  it('keeps a host it cannot reach unless told to --forget it; then revokes its token and drops it', async () => {
    const gone = `${name}-gone`;
    const created = await braid([
      'tokens',
      'create',
      '--kind',
      'join',
      '--name',
      `farm-${gone}`,
      '--data-dir',
      coordinator.dataDir,
      '--output',
      'json',
    ]);
    expect(created.code, created.stderr).toBe(0);
    const token = JSON.parse(created.stdout) as { id: string };
    // A host whose sshd is gone: a loopback port nothing listens on.
    const closed = await new Promise<number>((resolve) => {
      const server = createServer();
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    const record = JSON.parse(
      await readFile(farmFile, 'utf8').catch(() => '{"version":1,"hosts":[]}'),
    ) as { hosts: unknown[] };
    const now = new Date().toISOString();
    record.hosts.push({
      name: gone,
      url: `ssh://root@127.0.0.1:${closed}`,
      prefix: join(dir, 'gone'),
      service: 'supervised',
      coordinator: coordinator.address,
      joinToken: {
        id: token.id,
        name: `farm-${gone}`,
        dataDir: coordinator.dataDir,
        createdByBraid: true,
      },
      bundleSha256: 'sha256:unused',
      addedAt: now,
      updatedAt: now,
    });
    await writeFile(farmFile, JSON.stringify(record));
    const tokenState = async () =>
      (await listTokens()).find((t) => t.name === `farm-${gone}`)?.state;

    // The host is not coming back: no need to wait the default 20 s for it.
    const quick = ['--ssh-connect-timeout-ms', '2000'];
    const refused = await braid(['farm', 'remove', gone, ...quick, ...hostArgs()], {
      timeoutMs: 60_000,
    });
    expect(refused.code).toBe(1);
    const lines = refused.stderr.split('\n').filter((l) => l.startsWith('braid: '));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`127.0.0.1:${closed}`);
    expect(lines[0]).toContain(`braid farm remove ${gone} --forget`);
    expect(await readFile(farmFile, 'utf8')).toContain(gone);
    expect(await tokenState()).toBe('active');

    const forgotten = await braid(['farm', 'remove', gone, '--forget', ...quick, ...hostArgs()], {
      timeoutMs: 60_000,
    });
    expect(forgotten.code, forgotten.stderr).toBe(0);
    expect(await readFile(farmFile, 'utf8')).not.toContain(gone);
    expect(await tokenState()).toBe('revoked');
  });

  it('refuses a host whose key is not the one in known_hosts, in one line, and installs nothing', async () => {
    const strangerPub = (await readFile(`${sshd.strangerKey}.pub`, 'utf8')).trim().split(/\s+/);
    const wrongKnownHosts = join(dir, 'wrong_known_hosts');
    await writeFile(
      wrongKnownHosts,
      `[127.0.0.1]:${sshd.port} ${strangerPub[0]} ${strangerPub[1]}\n`,
    );
    const otherPrefix = join(dir, 'refused');
    const otherName = `${name}-refused`;

    const refused = await braid([
      'farm',
      'add',
      sshd.url,
      '--name',
      otherName,
      '--prefix',
      otherPrefix,
      '--no-systemd',
      '--data-dir',
      coordinator.dataDir,
      '--coordinator',
      coordinator.address,
      '--farm-file',
      farmFile,
      '--ssh-key',
      sshd.clientKey,
      '--ssh-known-hosts',
      wrongKnownHosts,
    ]);
    expect(refused.code).toBe(1);
    const lines = refused.stderr.split('\n').filter((l) => l.startsWith('braid: '));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('host key changed');
    expect(lines[0]).toContain(sshd.hostFingerprint);

    expect(await exists(otherPrefix)).toBe(false);
    expect((await listTokens()).map((t) => t.name)).not.toContain(`farm-${otherName}`);
    const record = await readFile(farmFile, 'utf8').catch(() => '');
    expect(record).not.toContain(otherName);
  });

  it('refuses an address that is not ssh://, naming it, before anything is done', async () => {
    const refused = await braid(['farm', 'add', 'http://127.0.0.1:1', ...hostArgs()]);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toMatch(
      /^braid: .*"http:\/\/127\.0\.0\.1:1".*not an ssh:\/\/ URL/,
    );
  });
});

describe('braid farm add for a coordinator that requires mTLS', () => {
  let sshd: TestSshd;
  let coordinator: TestCoordinator;
  let dir: string;
  let prefix: string;
  const name = `farm-mtls-${randomBytes(3).toString('hex')}`;
  const cert = (file: string) => join(dir, 'certs', file);
  /** What the CLI itself needs to reach the coordinator: its CA and a client certificate. */
  const tls = () => [
    '--tls-ca',
    cert('ca.pem'),
    '--tls-cert',
    cert('client.pem'),
    '--tls-key',
    cert('client-key.pem'),
  ];

  beforeAll(async () => {
    await requireEngine();
    dir = await mkdtemp(join(tmpdir(), 'braid-farm-mtls-'));
    prefix = join(dir, 'opt', 'braid');
    const made = await braid(['certs', 'init', '--dir', join(dir, 'certs')]);
    expect(made.code, made.stderr).toBe(0);
    sshd = await startSshd();
    coordinator = await startTestCoordinator('127.0.0.1:0', [
      '--tls-cert',
      cert('server.pem'),
      '--tls-key',
      cert('server-key.pem'),
      '--tls-ca',
      cert('ca.pem'),
    ]);
  });

  afterAll(async () => {
    for (const file of ['supervisor.pid', 'agent.pid']) {
      const pid = await pidIn(join(prefix ?? '/nonexistent', 'run', file)).catch(() => 0);
      if (pid > 0 && (await alive(pid))) process.kill(pid, 'SIGKILL');
    }
    await coordinator?.stop();
    await sshd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('installs the agent with its client certificate; it joins; remove takes the key away', async () => {
    const common = [
      '--coordinator',
      coordinator.address,
      ...tls(),
      '--farm-file',
      join(dir, 'farm.json'),
      '--ssh-key',
      sshd.clientKey,
      '--ssh-known-hosts',
      sshd.knownHosts,
    ];
    const added = await braid(
      [
        'farm',
        'add',
        sshd.url,
        '--name',
        name,
        '--prefix',
        prefix,
        '--no-systemd',
        '--data-dir',
        coordinator.dataDir,
        '--agent-setting',
        'build-network=none',
        '--agent-tls-cert',
        cert('client.pem'),
        '--agent-tls-key',
        cert('client-key.pem'),
        ...common,
      ],
      { timeoutMs: 180_000 },
    );
    expect(added.code, added.stderr).toBe(0);
    expect(added.stdout).toMatch(new RegExp(`agent ${name}: connected; native linux/amd64`));
    const env = await readFile(join(prefix, 'etc', 'agent.env'), 'utf8');
    expect(env).toContain(`BRAID_TLS_CERT='${join(prefix, 'etc', 'tls-cert.pem')}'`);
    expect(env).toContain(`BRAID_TLS_KEY='${join(prefix, 'etc', 'tls-key.pem')}'`);
    expect((await stat(join(prefix, 'etc', 'tls-key.pem'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(prefix, 'etc', 'tls-key.pem'), 'utf8')).toBe(
      await readFile(cert('client-key.pem'), 'utf8'),
    );
    const listed = await braid(['agents', '--coordinator', coordinator.address, ...tls()]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(name);

    const removed = await braid(['farm', 'remove', name, ...common], { timeoutMs: 180_000 });
    expect(removed.code, removed.stderr).toBe(0);
    expect(await exists(join(prefix, 'etc', 'tls-key.pem'))).toBe(false);
  });

  it('refuses a client certificate without its key, before touching the host', async () => {
    const refused = await braid([
      'farm',
      'add',
      sshd.url,
      '--prefix',
      join(dir, 'half'),
      '--no-systemd',
      '--agent-tls-cert',
      cert('client.pem'),
      '--coordinator',
      coordinator.address,
      ...tls(),
    ]);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toBe(
      'braid: --agent-tls-cert and --agent-tls-key go together: give both, or neither',
    );
    expect(await exists(join(dir, 'half'))).toBe(false);
  });
});
