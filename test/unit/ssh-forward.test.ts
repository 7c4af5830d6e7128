/**
 * ForwardedAgents in process: the one-line refusals of bad `--ssh` sources,
 * and the agent protocol served on an in-memory byte stream (ssh2's own
 * client on the other end, or raw messages where ssh2 has no client call).
 * OpenSSH's tools against it: test/integration/ssh-forward.test.ts.
 */
import { generateKeyPairSync, verify } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import ssh2, { AgentProtocol, type ParsedKey } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BraidError } from '../../src/errors.js';
import { ForwardedAgents, type SshSpec } from '../../src/cli/ssh-forward.js';
import { MAX_AGENT_MESSAGE_BYTES } from '../../src/cli/ssh-forward/frame-guard.js';

const SSH_AGENT_FAILURE = 5;
const SSH_AGENTC_REQUEST_IDENTITIES = 11;
const SSH_AGENT_IDENTITIES_ANSWER = 12;
const SSH_AGENTC_SIGN_REQUEST = 13;
const SSH_AGENTC_ADD_IDENTITY = 17;
const SSH_AGENTC_REMOVE_ALL_IDENTITIES = 19;
const SSH_AGENTC_LOCK = 22;
const SSH_AGENTC_EXTENSION = 27;

let dir: string;
const file = (name: string): string => join(dir, name);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-sshfwd-unit-'));
  const ed25519 = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'unit-ed25519' });
  const rsa = ssh2.utils.generateKeyPairSync('rsa', { bits: 2048, comment: 'unit-rsa' });
  const ecdsa = ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256, comment: 'unit-ecdsa' });
  const encrypted = ssh2.utils.generateKeyPairSync('ed25519', {
    comment: 'unit-encrypted',
    cipher: 'aes256-ctr',
    passphrase: 'secret words',
    rounds: 4,
  });
  const pkcs8Encrypted = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: {
      type: 'pkcs8',
      format: 'pem',
      cipher: 'aes-256-cbc',
      passphrase: 'secret words',
    },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const pkcs8Ed25519 = generateKeyPairSync('ed25519', {
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  await writeFile(file('ed25519'), ed25519.private, { mode: 0o600 });
  await writeFile(file('ed25519.pub'), ed25519.public);
  await writeFile(file('rsa'), rsa.private, { mode: 0o600 });
  await writeFile(file('ecdsa'), ecdsa.private, { mode: 0o600 });
  await writeFile(file('encrypted'), encrypted.private, { mode: 0o600 });
  await writeFile(file('pkcs8-encrypted'), pkcs8Encrypted.privateKey, { mode: 0o600 });
  await writeFile(file('pkcs8-ed25519'), pkcs8Ed25519.privateKey, { mode: 0o600 });
  await writeFile(file('notes.txt'), 'these are not the keys you are looking for\n');
  await writeFile(file('huge'), Buffer.alloc(200 * 1024, 'A'));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The error open() throws for `specs`. */
async function refusal(specs: SshSpec[], options = {}): Promise<BraidError> {
  const err: unknown = await ForwardedAgents.open(specs, options).then(
    () => new Error('open() accepted it'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BraidError);
  expect((err as BraidError).code).toBe('invalid_argument');
  expect((err as BraidError).message).not.toContain('\n');
  return err as BraidError;
}

const keySpec = (id: string, ...names: string[]): SshSpec => ({
  id,
  sources: names.map((name) => ({ kind: 'key', path: file(name) })),
});

describe('ForwardedAgents.open refuses a source it cannot use, in one line naming --ssh ID', () => {
  it('an agent socket that does not exist', async () => {
    const path = file('no-agent.sock');
    const err = await refusal([{ id: 'default', sources: [{ kind: 'socket', path }] }]);
    expect(err.message).toBe(`--ssh default: agent socket ${path} does not exist`);
  });

  it('a regular file given as an agent socket', async () => {
    const path = file('notes.txt');
    const err = await refusal([{ id: 'default', sources: [{ kind: 'socket', path }] }]);
    expect(err.message).toBe(
      `--ssh default: ${path} is not a socket (an ssh-agent's, such as $SSH_AUTH_SOCK)`,
    );
  });

  describe('an agent socket that accepts and never answers', () => {
    let server: Server;
    const path = (): string => file('silent.sock');
    beforeAll(async () => {
      // Reads and drops what it gets, so it sees the client hang up.
      server = createServer((socket) => socket.resume());
      await new Promise<void>((resolve) => server.listen(path(), resolve));
    });
    afterAll(async () => {
      await new Promise((resolve) => server.close(resolve));
    });

    it('is refused after the request timeout', async () => {
      const started = Date.now();
      const err = await refusal([{ id: 'git', sources: [{ kind: 'socket', path: path() }] }], {
        requestTimeoutMs: 200,
      });
      expect(err.message).toBe(
        `--ssh git: ssh-agent at ${path()} does not answer (no answer within 200 ms)`,
      );
      expect(Date.now() - started).toBeLessThan(5_000);
    });
  });

  it('a key file that does not exist', async () => {
    const err = await refusal([keySpec('deploy', 'missing')]);
    expect(err.message).toBe(`--ssh deploy: key file ${file('missing')} does not exist`);
  });

  it('a file that is not a key', async () => {
    const err = await refusal([keySpec('deploy', 'notes.txt')]);
    expect(err.message).toBe(
      `--ssh deploy: ${file('notes.txt')} is not a private key file (Unsupported key format)`,
    );
  });

  it('a file too large to be a key, without reading it whole', async () => {
    const err = await refusal([keySpec('deploy', 'huge')]);
    expect(err.message).toBe(
      `--ssh deploy: ${file('huge')} is not a private key file (over 100 KiB)`,
    );
  });

  it.each(['encrypted', 'pkcs8-encrypted'])(
    'an encrypted key (%s), since braid asks for no passphrase, as buildx does not',
    async (name) => {
      const err = await refusal([keySpec('deploy', 'ed25519', name)]);
      expect(err.message).toBe(
        `--ssh deploy: key file ${file(name)} is passphrase-protected, and braid, like buildx, ` +
          `asks for no passphrase: load it into ssh-agent (ssh-add ${file(name)}) and ` +
          'forward the agent (--ssh deploy=$SSH_AUTH_SOCK)',
      );
    },
  );

  it('a public key', async () => {
    const err = await refusal([keySpec('deploy', 'ed25519.pub')]);
    expect(err.message).toBe(
      `--ssh deploy: ${file('ed25519.pub')} holds a public key: name the private key file, not the .pub`,
    );
  });

  it('a PKCS#8 key of a type ssh2 cannot read from PKCS#8', async () => {
    const err = await refusal([keySpec('deploy', 'pkcs8-ed25519')]);
    expect(err.message).toBe(
      `--ssh deploy: ${file('pkcs8-ed25519')} is not a private key file ` +
        '(a PKCS#8 ed25519 key; only RSA and ECDSA keys are read in that format)',
    );
  });

  it('an id given twice, and an id without sources', async () => {
    expect((await refusal([keySpec('a', 'ed25519'), keySpec('a', 'rsa')])).message).toBe(
      '--ssh a: the id is given more than once',
    );
    expect((await refusal([{ id: 'b', sources: [] }])).message).toBe(
      '--ssh b: no agent socket or key file given',
    );
  });
});

/** One forwarded connection in memory: raw request bytes in, reply messages out. */
interface Wire {
  /** The stream serve() gets. */
  stream: Duplex;
  /** What the build side writes. */
  requests: PassThrough;
  /** Resolves with the next `count` whole reply messages (type byte first). */
  replies(count: number): Promise<Buffer[]>;
  /** Resolves when serve() has ended the stream. */
  closed: Promise<void>;
}

function wire(): Wire {
  const requests = new PassThrough();
  const replyBytes = new PassThrough();
  const stream = Duplex.from({ readable: requests, writable: replyBytes });
  let received = Buffer.alloc(0);
  const waiters: Array<() => void> = [];
  replyBytes.on('data', (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    for (const wake of waiters.splice(0)) wake();
  });
  const closed = new Promise<void>((resolve) => stream.on('close', () => resolve()));
  const next = (): Buffer | undefined => {
    if (received.length < 4) return undefined;
    const length = received.readUInt32BE(0);
    if (received.length < 4 + length) return undefined;
    const message = received.subarray(4, 4 + length);
    received = received.subarray(4 + length);
    return message;
  };
  return {
    stream,
    requests,
    closed,
    async replies(count) {
      const messages: Buffer[] = [];
      const deadline = Date.now() + 5_000;
      while (messages.length < count) {
        const message = next();
        if (message) {
          messages.push(message);
          continue;
        }
        if (Date.now() > deadline) throw new Error(`${messages.length} of ${count} replies`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 50);
        });
      }
      return messages;
    },
  };
}

function message(type: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(1 + body.length, 0);
  header[4] = type;
  return Buffer.concat([header, body]);
}

function sshString(value: Buffer | string): Buffer {
  const bytes = Buffer.from(value);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([length, bytes]);
}

/** ssh2's agent client on the build side of a connection served for `id`. */
function connectClient(
  agents: ForwardedAgents,
  id: string,
): { client: AgentProtocol; end(): void } {
  const requests = new PassThrough();
  const replies = new PassThrough();
  const client = new AgentProtocol(true);
  client.pipe(requests);
  replies.pipe(client);
  agents.serve(id, Duplex.from({ readable: requests, writable: replies }));
  return { client, end: () => requests.end() };
}

/** An SSH ECDSA signature blob (mpint r, mpint s) checked with Node's crypto. */
function verifyEcdsa(key: ParsedKey, data: Buffer, blob: Buffer): boolean {
  const r = blob.subarray(4, 4 + blob.readUInt32BE(0));
  const s = blob.subarray(8 + r.length);
  const fixed = (n: Buffer): Buffer => {
    const bare = n[0] === 0 ? n.subarray(1) : n;
    return Buffer.concat([Buffer.alloc(32 - bare.length), bare]);
  };
  return verify(
    'sha256',
    data,
    { key: key.getPublicPEM(), dsaEncoding: 'ieee-p1363' },
    Buffer.concat([fixed(r), fixed(s)]),
  );
}

/** The key in a file the test wrote (its private half verifies as well as its public one). */
async function keyOf(name: string): Promise<ParsedKey> {
  return ssh2.utils.parseKey(await readFile(file(name))) as ParsedKey;
}

describe('ForwardedAgents.serve', () => {
  let agents: ForwardedAgents;
  let ed25519: ParsedKey;
  let rsa: ParsedKey;
  let ecdsa: ParsedKey;

  beforeAll(async () => {
    agents = await ForwardedAgents.open(
      [keySpec('keys', 'ed25519', 'rsa', 'ecdsa'), keySpec('limited', 'ed25519')],
      { maxPendingRequests: 4 },
    );
    ed25519 = await keyOf('ed25519');
    rsa = await keyOf('rsa');
    ecdsa = await keyOf('ecdsa');
  });
  afterAll(() => agents.close());

  it('lists the ids it serves', () => {
    expect(agents.ids()).toEqual(['keys', 'limited']);
  });

  it('answers ssh2 agent clients: lists the keys and signs with each, RSA with the flagged hash', async () => {
    const { client, end } = connectClient(agents, 'keys');
    const keys = await new Promise<ParsedKey[]>((resolve, reject) =>
      client.getIdentities((err, listed) => (err ? reject(err) : resolve(listed ?? []))),
    );
    expect(keys.map((k) => k.getPublicSSH().toString('base64'))).toEqual(
      [ed25519, rsa, ecdsa].map((k) => k.getPublicSSH().toString('base64')),
    );
    const data = Buffer.from('data to sign');
    const sign = (key: ParsedKey, hash?: 'sha256' | 'sha512'): Promise<Buffer> =>
      new Promise((resolve, reject) =>
        client.sign(key, data, hash ? { hash } : {}, (err, sig) =>
          err || !sig ? reject(err ?? new Error('no signature')) : resolve(sig),
        ),
      );
    expect(ed25519.verify(data, await sign(ed25519))).toBe(true);
    expect(verifyEcdsa(ecdsa, data, await sign(ecdsa))).toBe(true);
    expect(rsa.verify(data, await sign(rsa, 'sha256'), 'sha256')).toBe(true);
    expect(rsa.verify(data, await sign(rsa, 'sha512'), 'sha512')).toBe(true);
    expect(rsa.verify(data, await sign(rsa, 'sha512'), 'sha256')).toBe(false);
    end();
  });

  it('refuses requests that change the agent, on the same connection, and still answers the next list', async () => {
    const w = wire();
    agents.serve('keys', w.stream);
    const addBody = Buffer.concat([sshString('ssh-ed25519'), sshString(Buffer.alloc(32, 7))]);
    w.requests.write(
      Buffer.concat([
        message(SSH_AGENTC_ADD_IDENTITY, addBody),
        message(SSH_AGENTC_REQUEST_IDENTITIES),
        message(SSH_AGENTC_REMOVE_ALL_IDENTITIES),
        message(SSH_AGENTC_LOCK, sshString('passphrase')),
        message(SSH_AGENTC_EXTENSION, sshString('session-bind@openssh.com')),
        // A sign request with bytes after its flags, and one cut short.
        message(
          SSH_AGENTC_SIGN_REQUEST,
          Buffer.concat([sshString(ed25519.getPublicSSH()), sshString('x'), Buffer.alloc(8)]),
        ),
        message(SSH_AGENTC_SIGN_REQUEST, sshString(ed25519.getPublicSSH())),
        message(SSH_AGENTC_REQUEST_IDENTITIES, Buffer.from('trailing')),
        message(SSH_AGENTC_REQUEST_IDENTITIES),
      ]),
    );
    const replies = await w.replies(9);
    expect(replies.map((r) => r[0])).toEqual([
      SSH_AGENT_FAILURE,
      SSH_AGENT_IDENTITIES_ANSWER,
      SSH_AGENT_FAILURE,
      SSH_AGENT_FAILURE,
      SSH_AGENT_FAILURE,
      SSH_AGENT_FAILURE,
      SSH_AGENT_FAILURE,
      SSH_AGENT_FAILURE,
      SSH_AGENT_IDENTITIES_ANSWER,
    ]);
    // nkeys of both answers: the three keys.
    expect(replies[1]!.readUInt32BE(1)).toBe(3);
    expect(replies[8]!.readUInt32BE(1)).toBe(3);
    w.requests.end();
    await w.closed;
  });

  it('answers a request that arrives one byte at a time', async () => {
    const w = wire();
    agents.serve('keys', w.stream);
    for (const byte of message(SSH_AGENTC_REQUEST_IDENTITIES)) w.requests.write(Buffer.of(byte));
    expect((await w.replies(1))[0]![0]).toBe(SSH_AGENT_IDENTITIES_ANSWER);
    w.requests.end();
    await w.closed;
  });

  it('refuses to sign with a key no source of the id holds', async () => {
    const w = wire();
    agents.serve('limited', w.stream);
    const body = Buffer.concat([sshString(rsa.getPublicSSH()), sshString('data'), Buffer.alloc(4)]);
    w.requests.write(message(SSH_AGENTC_SIGN_REQUEST, body));
    expect((await w.replies(1))[0]![0]).toBe(SSH_AGENT_FAILURE);
    w.requests.end();
    await w.closed;
  });

  it.each([
    { what: `over ${MAX_AGENT_MESSAGE_BYTES} bytes`, length: MAX_AGENT_MESSAGE_BYTES + 1 },
    { what: 'of length 0', length: 0 },
  ])(
    'ends a connection whose message claims a length $what, without waiting for its bytes',
    async ({ length }) => {
      const w = wire();
      agents.serve('keys', w.stream);
      const header = Buffer.alloc(4);
      header.writeUInt32BE(length, 0);
      w.requests.write(Buffer.concat([header, Buffer.of(SSH_AGENTC_REQUEST_IDENTITIES)]));
      await w.closed;
    },
  );

  it('ends a connection with more requests in flight than allowed', async () => {
    const w = wire();
    agents.serve('limited', w.stream);
    w.requests.write(
      Buffer.concat(Array.from({ length: 5 }, () => message(SSH_AGENTC_REQUEST_IDENTITIES))),
    );
    await w.closed;
  });

  it('ends a connection for an id it does not serve', async () => {
    const w = wire();
    agents.serve('nobody', w.stream);
    await w.closed;
  });

  it('close() ends the connections it serves and refuses later ones', async () => {
    const own = await ForwardedAgents.open([keySpec('keys', 'ed25519')]);
    const open = wire();
    own.serve('keys', open.stream);
    open.requests.write(message(SSH_AGENTC_REQUEST_IDENTITIES));
    await open.replies(1);
    own.close();
    await open.closed;
    const later = wire();
    own.serve('keys', later.stream);
    await later.closed;
  });
});
