import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/agent/engine.js';
import { loadConfig } from '../../src/config/loader.js';
import { agentSettings } from '../../src/config/settings.js';
import { ConfigError } from '../../src/errors.js';
import { SshError } from '../../src/ssh/errors.js';
import { describeIdentity, loadIdentities } from '../../src/ssh/identities.js';
import { parseSshUrl } from '../../src/ssh/ssh-url.js';

describe('ssh:// URLs', () => {
  it('reads user, host, port and the optional socket path', () => {
    expect(parseSshUrl('ssh://builder@s390x.example')).toEqual({
      user: 'builder',
      host: 's390x.example',
      port: 22,
      path: undefined,
      display: 'ssh://builder@s390x.example:22',
    });
    expect(parseSshUrl('ssh://root@127.0.0.1:2222/')).toMatchObject({
      host: '127.0.0.1',
      port: 2222,
      path: undefined,
    });
    expect(parseSshUrl('ssh://core@[::1]:2200/run/user/1000/docker.sock')).toEqual({
      user: 'core',
      host: '::1',
      port: 2200,
      path: '/run/user/1000/docker.sock',
      display: 'ssh://core@[::1]:2200',
    });
    expect(parseSshUrl('SSH://ci-runner@Build.Example:22').host).toBe('build.example');
    expect(parseSshUrl('ssh://root@host/run/user/../docker.sock').path).toBe('/run/docker.sock');
  });

  it.each([
    ['ssh://s390x.example', 'the user is missing'],
    ['ssh://root:hunter2@host', 'a password in the URL is not supported'],
    ['ssh://root@host:0', 'port 0 is out of range'],
    ['ssh://root@host/run/docker%00.sock', 'NUL byte'],
    ['ssh://root@host?x=1', 'a query or fragment'],
    ['ssh://root@bad_host', 'is not a valid host'],
    ['tcp://root@host', 'not an ssh:// URL'],
  ])('refuses %s, naming it: %s', (url, why) => {
    let caught: unknown;
    try {
      parseSshUrl(url);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(SshError);
    const err = caught as SshError;
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toContain(why);
    expect(err.message).toContain('expected ssh://user@host[:port][/path/to/socket]');
    expect(err.message).not.toContain('hunter2');
  });
});

describe('SSH identities', () => {
  let dir: string;
  let plainKey: string;
  let encryptedKey: string;
  const passphrase = 'correct horse battery staple';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-ssh-ids-'));
    plainKey = join(dir, 'plain');
    encryptedKey = join(dir, 'encrypted');
    const plain = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'plain' });
    const encrypted = ssh2.utils.generateKeyPairSync('ed25519', {
      comment: 'encrypted',
      cipher: 'aes256-ctr',
      passphrase,
      rounds: 4,
    });
    await writeFile(plainKey, plain.private, { mode: 0o600 });
    await writeFile(`${plainKey}.pub`, plain.public);
    await writeFile(encryptedKey, encrypted.private, { mode: 0o600 });
    await mkdir(join(dir, 'home', '.ssh'), { recursive: true });
    await writeFile(join(dir, 'home', '.ssh', 'id_ecdsa'), plain.private, { mode: 0o600 });
    await writeFile(join(dir, 'home', '.ssh', 'id_rsa'), 'not a key');
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('uses exactly the named keys, decrypting with the passphrase', () => {
    const identities = loadIdentities({
      keyFiles: [plainKey, encryptedKey],
      passphrase,
      agentSocket: '/run/agent.sock',
      homeDir: join(dir, 'home'),
    });
    expect(identities.map((i) => i.kind)).toEqual(['key', 'key']);
    expect(describeIdentity(identities[0]!)).toMatch(
      new RegExp(`^key ${plainKey} \\(ssh-ed25519 SHA256:[A-Za-z0-9+/]{43}\\)$`),
    );
  });

  it('without named keys uses ssh-agent, then the default keys that exist and parse', () => {
    const identities = loadIdentities({
      keyFiles: [],
      agentSocket: '/run/agent.sock',
      homeDir: join(dir, 'home'),
    });
    expect(identities.map(describeIdentity)).toEqual([
      'ssh-agent at /run/agent.sock',
      expect.stringMatching(new RegExp(`^key ${join(dir, 'home', '.ssh', 'id_ecdsa')} `)),
    ]);
  });

  it.each([
    [
      'a missing key file',
      () => [join(dir, 'nope')],
      undefined,
      /ssh key .*nope: cannot read it \(ENOENT\)/,
    ],
    [
      'an encrypted key without its passphrase',
      () => [encryptedKey],
      undefined,
      /encrypted and no passphrase was given \(set BRAID_SSH_KEY_PASSPHRASE\)/,
    ],
    ['a wrong passphrase', () => [encryptedKey], 'wrong', /not a usable private key/],
    ['the .pub file', () => [`${plainKey}.pub`], undefined, /holds no private key/],
  ])('refuses %s in one line naming the file', (_what, files, given, message) => {
    let caught: unknown;
    try {
      loadIdentities({ keyFiles: files(), passphrase: given });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(SshError);
    const err = caught as SshError;
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toMatch(message);
    expect(err.message).not.toContain('\n');
    expect(err.message).not.toContain('wrong');
    expect(err.message).not.toContain('PRIVATE KEY');
  });

  it('with nothing to log in with says what to provide', () => {
    expect(() => loadIdentities({ keyFiles: [], homeDir: join(dir, 'empty') })).toThrow(
      /no identity to log in with: pass --ssh-key FILE, start ssh-agent \(SSH_AUTH_SOCK\)/,
    );
  });

  it('createEngine opens an ssh:// engine lazily: no connection until the first call', async () => {
    const engine = createEngine('ssh://root@127.0.0.1:2222/run/docker.sock', {
      ssh: { keyFiles: [plainKey], knownHostsFile: join(dir, 'known_hosts') },
    });
    expect(engine.url).toBe('ssh://root@127.0.0.1:2222/run/docker.sock');
    expect((engine as unknown as { connectionState: string }).connectionState).toBe('idle');
    await engine.close();
    await expect(engine.info()).rejects.toMatchObject({
      code: 'cancelled',
      message: expect.stringContaining('engine info failed: ssh://root@127.0.0.1:2222'),
    });
  });
});

describe('the agent settings for an ssh:// engine', () => {
  it('take keys, known_hosts and timings from flags, env or the file, with defaults', () => {
    const defaults = loadConfig(agentSettings({}), {
      flags: { engine: 'ssh://builder@s390x.example' },
      env: {},
    });
    expect(defaults).toMatchObject({
      engine: 'ssh://builder@s390x.example',
      sshKey: [],
      sshKeyPassphrase: undefined,
      sshKnownHosts: undefined,
      sshKeepaliveIntervalMs: 15_000,
      sshConnectTimeoutMs: 20_000,
    });
    const given = loadConfig(agentSettings({}), {
      flags: { sshKey: ['/etc/braid/id_ed25519'] },
      env: {
        BRAID_ENGINE: 'ssh://builder@s390x.example:2222/run/docker.sock',
        BRAID_SSH_KEY_PASSPHRASE: ' spaces kept ',
        BRAID_SSH_KNOWN_HOSTS: '/etc/braid/known_hosts',
        BRAID_SSH_KEEPALIVE_INTERVAL_MS: '5000',
      },
    });
    expect(given).toMatchObject({
      sshKey: ['/etc/braid/id_ed25519'],
      sshKeyPassphrase: ' spaces kept ',
      sshKnownHosts: '/etc/braid/known_hosts',
      sshKeepaliveIntervalMs: 5000,
    });
  });

  it.each([
    [{ engine: 'ssh://s390x.example' }, {}, '--engine', 'the user is missing'],
    [{}, { BRAID_ENGINE: 'ssh://root:pw@host' }, 'BRAID_ENGINE', 'a password in the URL'],
    [{ engine: 'ftp://host' }, {}, '--engine', 'ssh://user@host[:port]'],
    [{ sshConnectTimeoutMs: '10' }, {}, '--ssh-connect-timeout-ms', 'must be at least 1000'],
  ])('refuse %o %o naming %s', (flags, env, key, why) => {
    let caught: unknown;
    try {
      loadConfig(agentSettings({}), { flags, env });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).key).toBe(key);
    expect((caught as ConfigError).message).toContain(why);
  });
});
