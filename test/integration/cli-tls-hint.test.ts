import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';
import { requireCommand } from '../support/components.js';

describe('a TLS client set up by environment or config file, against a plaintext coordinator', () => {
  let coordinator: TestCoordinator;
  let dir: string;
  let ca: string;

  beforeAll(async () => {
    await requireCommand('openssl', 'openssl');
    dir = await mkdtemp(join(tmpdir(), 'braid-tls-hint-'));
    const made = await braid(['certs', 'init', '--dir', join(dir, 'certs')]);
    expect(made.code, made.stderr).toBe(0);
    ca = join(dir, 'certs', 'ca.pem');
    coordinator = await startTestCoordinator();
  });
  afterAll(async () => {
    await coordinator?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const notTls = (advice: string) =>
    `braid: cannot reach ${coordinator.address}: TLS handshake failed: the coordinator does not speak TLS (on loopback, ${advice}; elsewhere --insecure allows plaintext)\n`;

  it('names BRAID_TLS_CA when that variable turned TLS on', async () => {
    const result = await braid(['builds', '--coordinator', coordinator.address], {
      env: { BRAID_TLS_CA: ca },
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(notTls('unset BRAID_TLS_CA'));
  });

  it('names BRAID_TLS_CERT and BRAID_TLS_KEY when those variables turned TLS on', async () => {
    const result = await braid(['version', '--coordinator', coordinator.address], {
      env: {
        BRAID_TLS_CERT: join(dir, 'certs', 'client.pem'),
        BRAID_TLS_KEY: join(dir, 'certs', 'client-key.pem'),
      },
    });
    expect(result.stderr).toContain(notTls('unset BRAID_TLS_CERT and BRAID_TLS_KEY'));
  });

  it('names the config file key when the file set tlsCa', async () => {
    const config = join(dir, 'braid.yaml');
    await writeFile(config, `tlsCa: ${ca}\n`);
    const result = await braid([
      'builds',
      '--coordinator',
      coordinator.address,
      '--config',
      config,
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(notTls(`remove tlsCa from ${config}`));
  });
});
