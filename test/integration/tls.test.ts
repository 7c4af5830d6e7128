import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';
import { requireCommand } from '../support/components.js';
import { run } from '../support/process.js';

let dir: string;
/** A farm's certificates from `braid certs init`, and a second CA nobody trusts. */
let certs: string;
let strangers: string;

const file = (name: string) => join(certs, name);
const serverArgs = () => ['--tls-cert', file('server.pem'), '--tls-key', file('server-key.pem')];
const clientCert = () => ['--tls-cert', file('client.pem'), '--tls-key', file('client-key.pem')];

beforeAll(async () => {
  await requireCommand('openssl', 'openssl');
  dir = await mkdtemp(join(tmpdir(), 'braid-tls-'));
  certs = join(dir, 'certs');
  strangers = join(dir, 'strangers');
  for (const target of [certs, strangers]) {
    const made = await braid(['certs', 'init', '--dir', target]);
    expect(made.code, made.stderr).toBe(0);
  }
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('braid certs init', () => {
  it('makes a CA that openssl verifies the server and client certificates against', async () => {
    const verify = await run('openssl', [
      'verify',
      '-CAfile',
      file('ca.pem'),
      file('server.pem'),
      file('client.pem'),
    ]);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stdout).toBe(`${file('server.pem')}: OK\n${file('client.pem')}: OK\n`);
    for (const [cert, purpose] of [
      ['server.pem', 'sslserver'],
      ['client.pem', 'sslclient'],
    ] as const) {
      const checked = await run('openssl', [
        'verify',
        '-CAfile',
        file('ca.pem'),
        '-purpose',
        purpose,
        file(cert),
      ]);
      expect(checked.code, checked.stderr).toBe(0);
    }
    const foreign = await run('openssl', [
      'verify',
      '-CAfile',
      join(strangers, 'ca.pem'),
      file('server.pem'),
    ]);
    expect(foreign.code).not.toBe(0);
  });

  it('names localhost, 127.0.0.1 and ::1 in the server certificate by default', async () => {
    const server = new X509Certificate(await readFile(file('server.pem')));
    expect(server.subjectAltName).toBe(
      'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    );
    expect(server.checkIssued(new X509Certificate(await readFile(file('ca.pem'))))).toBe(true);
  });

  it('writes keys 0600 and certificates 0644', async () => {
    const modes: Record<string, number> = {};
    for (const name of [
      'ca.pem',
      'ca-key.pem',
      'server.pem',
      'server-key.pem',
      'client.pem',
      'client-key.pem',
    ]) {
      modes[name] = (await stat(file(name))).mode & 0o777;
    }
    expect(modes).toEqual({
      'ca.pem': 0o644,
      'ca-key.pem': 0o600,
      'server.pem': 0o644,
      'server-key.pem': 0o600,
      'client.pem': 0o644,
      'client-key.pem': 0o600,
    });
  });

  it('takes the SANs from --hosts', async () => {
    const target = join(dir, 'hosts');
    const made = await braid([
      'certs',
      'init',
      '--dir',
      target,
      '--hosts',
      'build.example,10.1.2.3',
    ]);
    expect(made.code, made.stderr).toBe(0);
    const server = new X509Certificate(await readFile(join(target, 'server.pem')));
    expect(server.subjectAltName).toBe('DNS:build.example, IP Address:10.1.2.3');
  });

  it('refuses to overwrite without --force, and replaces everything with it', async () => {
    const before = await readFile(file('ca.pem'), 'utf8');
    const target = join(dir, 'again');
    expect((await braid(['certs', 'init', '--dir', target])).code).toBe(0);
    await writeFile(join(target, 'client.pem'), 'mine');
    const refused = await braid(['certs', 'init', '--dir', target]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `braid: ${target} already holds ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem, client-key.pem: pass --force to replace them\n`,
    );
    expect(await readFile(join(target, 'client.pem'), 'utf8')).toBe('mine');
    const forced = await braid(['certs', 'init', '--dir', target, '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(await readFile(join(target, 'client.pem'), 'utf8')).toMatch(/^-----BEGIN CERTIFICATE/);
    expect(await readFile(file('ca.pem'), 'utf8')).toBe(before);
  });

  it('exits 2 naming a host that is neither a name nor an address', async () => {
    const bad = await braid(['certs', 'init', '--dir', join(dir, 'bad'), '--hosts', 'ok,no way']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('braid: --hosts: "no way" is neither a host name nor an IP address\n');
  });
});

describe('a coordinator serving TLS on 127.0.0.1', () => {
  let coordinator: TestCoordinator;
  beforeAll(async () => {
    coordinator = await startTestCoordinator('127.0.0.1:0', serverArgs());
  });
  afterAll(async () => {
    await coordinator?.stop();
  });

  it('answers braid version --tls-ca, by address and by name', async () => {
    const port = coordinator.address.split(':')[1] ?? '';
    for (const address of [coordinator.address, `localhost:${port}`]) {
      const result = await braid([
        'version',
        '--coordinator',
        address,
        '--tls-ca',
        file('ca.pem'),
        '--output',
        'json',
      ]);
      expect(result.code, result.stderr).toBe(0);
      expect(JSON.parse(result.stdout)).toMatchObject({ coordinator: { address } });
      expect(result.stderr).toBe('');
    }
  });

  it('is reported as started with transport tls', () => {
    const started = coordinator.process
      .stderr()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { msg: string; transport?: string })
      .find((l) => l.msg === 'coordinator started');
    expect(started?.transport).toBe('tls');
  });

  it('fails clearly without --tls-ca', async () => {
    const result = await braid(['version', '--coordinator', coordinator.address]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `braid: cannot reach ${coordinator.address}: the connection was closed during setup (if the coordinator serves TLS, pass its CA with --tls-ca)\n`,
    );
  });

  it("fails clearly with a CA that did not sign the coordinator's certificate", async () => {
    const result = await braid([
      'version',
      '--coordinator',
      coordinator.address,
      '--tls-ca',
      join(strangers, 'ca.pem'),
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `braid: cannot reach ${coordinator.address}: the coordinator's certificate is not trusted (unable to verify the first certificate): pass the CA that signed it with --tls-ca\n`,
    );
  });

  it('exits 2 naming a TLS file it cannot use', async () => {
    const missing = await braid(['version', '--coordinator', coordinator.address], {
      env: { BRAID_TLS_CA: join(dir, 'nope.pem') },
    });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe(
      `braid: invalid config BRAID_TLS_CA: cannot read ${join(dir, 'nope.pem')} (ENOENT)\n`,
    );
    const mismatched = await braid([
      'version',
      '--coordinator',
      coordinator.address,
      '--tls-cert',
      file('client.pem'),
      '--tls-key',
      file('server-key.pem'),
    ]);
    expect(mismatched.code).toBe(2);
    expect(mismatched.stderr).toBe(
      `braid: invalid config --tls-key: ${file('server-key.pem')} is not the key of the certificate in ${file('client.pem')}\n`,
    );
  });
});

describe('a plaintext coordinator and a TLS client', () => {
  it('says the coordinator does not speak TLS', async () => {
    const coordinator = await startTestCoordinator();
    try {
      const result = await braid([
        'version',
        '--coordinator',
        coordinator.address,
        '--tls-ca',
        file('ca.pem'),
      ]);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(
        `braid: cannot reach ${coordinator.address}: TLS handshake failed: the coordinator does not speak TLS (on loopback, drop the --tls-* flags; elsewhere --insecure allows plaintext)\n`,
      );
    } finally {
      await coordinator.stop();
    }
  });
});

describe('a coordinator requiring client certificates (mTLS)', () => {
  let coordinator: TestCoordinator;
  beforeAll(async () => {
    coordinator = await startTestCoordinator('127.0.0.1:0', [
      ...serverArgs(),
      '--tls-ca',
      file('ca.pem'),
    ]);
  });
  afterAll(async () => {
    await coordinator?.stop();
  });

  it('accepts a client certificate signed by its CA', async () => {
    const result = await braid([
      'version',
      '--coordinator',
      coordinator.address,
      '--tls-ca',
      file('ca.pem'),
      ...clientCert(),
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^coordinator {2}\S+ at /m);
  });

  it('refuses a client without a certificate', async () => {
    const result = await braid([
      'version',
      '--coordinator',
      coordinator.address,
      '--tls-ca',
      file('ca.pem'),
    ]);
    expect(result.code).toBe(1);
    // Usually the server's "certificate required" alert arrives; under load the
    // client may see the connection close first.
    expect(result.stderr).toMatch(
      new RegExp(
        `^braid: cannot reach ${coordinator.address}: the (coordinator requires a client certificate: pass --tls-cert and --tls-key|TLS connection was closed during setup \\(the coordinator may have refused the client certificate)`,
      ),
    );
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('refuses a client certificate from another CA', async () => {
    const result = await braid([
      'version',
      '--coordinator',
      coordinator.address,
      '--tls-ca',
      file('ca.pem'),
      '--tls-cert',
      join(strangers, 'client.pem'),
      '--tls-key',
      join(strangers, 'client-key.pem'),
    ]);
    expect(result.code).toBe(1);
    // TLS 1.3 reports this after the handshake: as an alert, a close or a reset.
    expect(result.stderr).toMatch(
      new RegExp(
        `^braid: cannot reach ${coordinator.address}: the (TLS connection was closed during setup \\(the coordinator may have refused the client certificate|coordinator refused the client certificate)`,
      ),
    );
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('TLS settings of the coordinator', () => {
  it('exits 2 when mTLS is asked for without a server certificate', async () => {
    const result = await braid([
      'coordinator',
      '--listen',
      '127.0.0.1:0',
      '--data-dir',
      join(dir, 'unused'),
      '--tls-ca',
      file('ca.pem'),
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      "braid: invalid config --tls-ca: client certificates (mTLS) need TLS: set --tls-cert and --tls-key (the server's certificate) too\n",
    );
  });
});
