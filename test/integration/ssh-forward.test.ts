/**
 * `braid build --ssh`'s CLI end against OpenSSH's own tools: a real
 * ssh-agent holds keys, and ssh-add, ssh-keygen -Y and ssh talk to
 * ForwardedAgents.serve() through a unix socket whose connections are
 * relayed as plain byte streams, cut into 3-byte pieces (as a gRPC relay
 * may cut them).
 */
import { appendFile, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import ssh2, { OpenSSHAgent, type ParsedKey } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ForwardedAgents } from '../../src/cli/ssh-forward.js';
import { requireCommand } from '../support/components.js';
import { run, startProcess, type Started } from '../support/process.js';
import { startSshd, type TestSshd } from '../support/sshd.js';

interface Tools {
  sshAgent: string;
  sshAdd: string;
  sshKeygen: string;
  ssh: string;
}

/** Key files the test makes; `agent*` go into the real ssh-agent, `file*` are key-file sources. */
const KEYS = {
  agentEd25519: ['ed25519'],
  agentRsa: ['rsa', '-b', '2048'],
  fileEd25519: ['ed25519'],
  fileRsa: ['rsa', '-b', '2048'],
  fileEcdsa: ['ecdsa', '-b', '256'],
  fileRsaPkcs8: ['rsa', '-b', '2048', '-m', 'PKCS8'],
  spare: ['ed25519'],
} as const;
type KeyName = keyof typeof KEYS;

let tools: Tools;
let dir: string;
let agent: Started | undefined;
let agentSocket: string;
let forwarded: ForwardedAgents | undefined;
const relays: Server[] = [];
const relaySockets = new Map<string, string>();

const privateKey = (name: KeyName): string => join(dir, name);
/** Public halves alone, so ssh-keygen -Y sign can only sign through the agent. */
const publicKey = (name: KeyName): string => join(dir, 'public', `${name}.pub`);
const withAgent = (socket: string): NodeJS.ProcessEnv => ({
  ...process.env,
  SSH_AUTH_SOCK: socket,
});

async function mustRun(command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const done = await run(command, args, { env: env ?? process.env, timeoutMs: 30_000 });
  if (done.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${done.code}: ${done.stderr.trim()}`);
  }
  return done.stdout;
}

/** `SHA256:...` as `ssh-keygen -lf` prints it. */
async function fingerprintOf(name: KeyName): Promise<string> {
  const line = await mustRun(tools.sshKeygen, ['-lf', publicKey(name)]);
  return line.split(' ')[1]!;
}

/** The fingerprints `ssh-add -l` lists through `socket`. */
async function listed(socket: string): Promise<string[]> {
  const out = await mustRun(tools.sshAdd, ['-l'], withAgent(socket));
  return out
    .trim()
    .split('\n')
    .map((line) => line.split(' ')[1]!)
    .sort();
}

/** A unix socket whose every connection reaches serve(id) as a non-socket Duplex fed 3 bytes at a time. */
async function relayFor(id: string): Promise<string> {
  const path = join(dir, `relay-${id}.sock`);
  const server = createServer((socket: Socket) => {
    const requests = new PassThrough();
    const replies = new PassThrough();
    socket.on('data', (data: Buffer) => {
      for (let at = 0; at < data.length; at += 3) requests.write(data.subarray(at, at + 3));
    });
    socket.on('end', () => requests.end());
    socket.on('error', () => requests.destroy());
    replies.pipe(socket);
    const stream = Duplex.from({ readable: requests, writable: replies });
    stream.on('close', () => socket.destroy());
    forwarded!.serve(id, stream);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  relays.push(server);
  relaySockets.set(id, path);
  return path;
}

const relay = (id: string): string => relaySockets.get(id)!;

beforeAll(async () => {
  tools = {
    sshAgent: await requireCommand('ssh-agent', 'openssh-client'),
    sshAdd: await requireCommand('ssh-add', 'openssh-client'),
    sshKeygen: await requireCommand('ssh-keygen', 'openssh-client'),
    ssh: await requireCommand('ssh', 'openssh-client'),
  };
  // Short: a unix socket path has ~107 bytes.
  dir = await mkdtemp(join(tmpdir(), 'braid-sshfwd-'));
  await mkdir(join(dir, 'public'));
  for (const [name, spec] of Object.entries(KEYS) as Array<[KeyName, readonly string[]]>) {
    const [type, ...more] = spec;
    await mustRun(tools.sshKeygen, [
      '-q',
      '-t',
      type!,
      ...more,
      '-N',
      '',
      '-C',
      `braid-${name}`,
      '-f',
      privateKey(name),
    ]);
    await copyFile(`${privateKey(name)}.pub`, publicKey(name));
  }
  agentSocket = join(dir, 'agent.sock');
  agent = startProcess(tools.sshAgent, ['-D', '-a', agentSocket]);
  await agent.waitForStdout(/SSH_AUTH_SOCK=/, 10_000);
  await mustRun(
    tools.sshAdd,
    [privateKey('agentEd25519'), privateKey('agentRsa')],
    withAgent(agentSocket),
  );

  forwarded = await ForwardedAgents.open([
    { id: 'default', sources: [{ kind: 'socket', path: agentSocket }] },
    {
      id: 'keys',
      sources: (['fileEd25519', 'fileRsa', 'fileEcdsa', 'fileRsaPkcs8'] as const).map((name) => ({
        kind: 'key' as const,
        path: privateKey(name),
      })),
    },
    {
      id: 'both',
      sources: [
        { kind: 'socket', path: agentSocket },
        { kind: 'key', path: privateKey('fileEd25519') },
      ],
    },
  ]);
  for (const id of forwarded.ids()) await relayFor(id);
});

afterAll(async () => {
  forwarded?.close();
  await Promise.all(relays.map((server) => new Promise((resolve) => server.close(resolve))));
  await agent?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('ForwardedAgents with OpenSSH', () => {
  it('lists the running ssh-agent keys through a forwarded connection, with ssh-keygen -lf fingerprints', async () => {
    expect(await listed(relay('default'))).toEqual(
      [await fingerprintOf('agentEd25519'), await fingerprintOf('agentRsa')].sort(),
    );
  });

  it('lists the keys of key files (OpenSSH ed25519, RSA and ECDSA, PKCS#8 RSA)', async () => {
    const names = ['fileEd25519', 'fileRsa', 'fileEcdsa', 'fileRsaPkcs8'] as const;
    expect(await listed(relay('keys'))).toEqual(
      (await Promise.all(names.map((name) => fingerprintOf(name)))).sort(),
    );
  });

  it('combines an agent socket and a key file under one id', async () => {
    const names = ['agentEd25519', 'agentRsa', 'fileEd25519'] as const;
    expect(await listed(relay('both'))).toEqual(
      (await Promise.all(names.map((name) => fingerprintOf(name)))).sort(),
    );
  });

  it('refuses ssh-add -D, ssh-add KEY and ssh-add -d KEY, and the real agent keeps exactly its keys', async () => {
    const env = withAgent(relay('default'));
    const removeAll = await run(tools.sshAdd, ['-D'], { env });
    expect(removeAll.code).not.toBe(0);
    expect(removeAll.stderr).toMatch(/Failed to remove all identities/);
    const add = await run(tools.sshAdd, [privateKey('spare')], { env });
    expect(add.code).not.toBe(0);
    expect(add.stderr).toMatch(/Could not add identity/);
    const remove = await run(tools.sshAdd, ['-d', publicKey('agentEd25519')], { env });
    expect(remove.code).not.toBe(0);
    expect(remove.stderr).toMatch(/Could not remove identity/);

    expect(await listed(agentSocket)).toEqual(
      [await fingerprintOf('agentEd25519'), await fingerprintOf('agentRsa')].sort(),
    );
    // The forwarded agent still answers after the refusals.
    expect(await listed(relay('default'))).toHaveLength(2);
  });

  const signCases: Array<{ id: string; key: KeyName; type: string }> = [
    { id: 'default', key: 'agentEd25519', type: 'ED25519' },
    { id: 'default', key: 'agentRsa', type: 'RSA' },
    { id: 'keys', key: 'fileEd25519', type: 'ED25519' },
    { id: 'keys', key: 'fileRsa', type: 'RSA' },
    { id: 'keys', key: 'fileEcdsa', type: 'ECDSA' },
    { id: 'keys', key: 'fileRsaPkcs8', type: 'RSA' },
    { id: 'both', key: 'fileEd25519', type: 'ED25519' },
    { id: 'both', key: 'agentRsa', type: 'RSA' },
  ];

  it.each(signCases)(
    'signs for ssh-keygen -Y sign with $key through --ssh $id, and ssh-keygen -Y verify accepts it',
    async ({ id, key, type }) => {
      const data = join(dir, `data-${id}-${key}`);
      await writeFile(data, `signed through --ssh ${id} with ${key}\n`);
      await mustRun(
        tools.sshKeygen,
        ['-Y', 'sign', '-f', publicKey(key), '-n', 'file', data],
        withAgent(relay(id)),
      );
      const signers = join(dir, `signers-${id}-${key}`);
      await writeFile(signers, `braid@test ${await readFile(publicKey(key), 'utf8')}`);
      const verify = [
        '-Y',
        'verify',
        '-f',
        signers,
        '-I',
        'braid@test',
        '-n',
        'file',
        '-s',
        `${data}.sig`,
      ];
      const good = await run(tools.sshKeygen, verify, { input: await readFile(data, 'utf8') });
      expect(good.stdout).toContain(
        `Good "file" signature for braid@test with ${type} key ${await fingerprintOf(key)}`,
      );
      expect(good.code).toBe(0);
      // The check is not vacuous: other data does not verify.
      const bad = await run(tools.sshKeygen, verify, { input: 'other data\n' });
      expect(bad.code).not.toBe(0);
    },
  );

  it.each([
    { id: 'default', key: 'agentRsa' as const },
    { id: 'keys', key: 'fileRsa' as const },
  ])(
    'makes RSA signatures with the hash the request flags (rsa-sha2-256, rsa-sha2-512) through --ssh $id',
    async ({ id, key }) => {
      const client = new OpenSSHAgent(relay(id));
      const rsa = ssh2.utils.parseKey(await readFile(publicKey(key))) as ParsedKey;
      const data = Buffer.from('session data to sign');
      for (const [hash, other] of [
        ['sha256', 'sha512'],
        ['sha512', 'sha256'],
      ] as const) {
        const signature = await new Promise<Buffer>((resolve, reject) =>
          client.sign(rsa, data, { hash }, (err, sig) =>
            err || !sig ? reject(err) : resolve(sig),
          ),
        );
        expect(rsa.verify(data, signature, hash)).toBe(true);
        expect(rsa.verify(data, signature, other)).toBe(false);
      }
    },
  );
});

describe('ForwardedAgents with a real ssh login', () => {
  let sshd: TestSshd | undefined;

  beforeAll(async () => {
    sshd = await startSshd();
    // sshd accepts the RSA key file source, not the ed25519 one ssh offers first.
    await appendFile(join(sshd.dir, 'authorized_keys'), await readFile(publicKey('fileRsa')));
  });

  afterAll(async () => {
    await sshd?.stop();
  });

  it('logs ssh in to sshd with a key-file source, as a build step ssh (git clone) does', async () => {
    const login = await run(
      tools.ssh,
      [
        '-F',
        '/dev/null',
        '-o',
        `IdentityAgent=${relay('keys')}`,
        '-o',
        'BatchMode=yes',
        '-o',
        `UserKnownHostsFile=${sshd!.knownHosts}`,
        '-o',
        'StrictHostKeyChecking=yes',
        '-p',
        String(sshd!.port),
        'root@127.0.0.1',
        'echo logged-in',
      ],
      { timeoutMs: 30_000 },
    );
    expect(login.stdout.trim()).toBe('logged-in');
    expect(login.code).toBe(0);
    expect(sshd!.log()).toContain(`Accepted publickey for root from 127.0.0.1`);
    expect(sshd!.log()).toContain(`RSA ${await fingerprintOf('fileRsa')}`);
  });
});
