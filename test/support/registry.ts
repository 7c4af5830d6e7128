/**
 * A real `docker-registry` (distribution 2.8) on a free 127.0.0.1 port with
 * its storage in a temp dir, started and stopped by the test.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireCommand } from './components.js';
import { startProcess, type Started } from './process.js';

export interface TestRegistry {
  /** `127.0.0.1:PORT`, as used in image references. */
  readonly host: string;
  readonly url: string;
  readonly storageDir: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (!address || typeof address === 'string') throw new Error('no port');
  return address.port;
}

async function waitReady(url: string, proc: Started, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
      // 401: up, and wants credentials.
      if (res.status === 200 || res.status === 401) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    const exited = await Promise.race([
      proc.exited,
      new Promise((r) => setTimeout(() => r(null), 100)),
    ]);
    if (exited) throw new Error(`docker-registry exited: ${proc.stderr().slice(-2000)}`);
  }
  throw new Error(`docker-registry at ${url} not ready within ${timeoutMs} ms (${last})`);
}

export type RegistryAuthConfig =
  | { kind: 'htpasswd'; file: string }
  | { kind: 'token'; realm: string; service: string; issuer: string; certFile: string };

function authYaml(auth: RegistryAuthConfig | undefined): string[] {
  if (!auth) return [];
  if (auth.kind === 'htpasswd') {
    return ['auth:', '  htpasswd:', '    realm: braid-test', `    path: ${auth.file}`];
  }
  return [
    'auth:',
    '  token:',
    `    realm: ${auth.realm}`,
    `    service: ${auth.service}`,
    `    issuer: ${auth.issuer}`,
    `    rootcertbundle: ${auth.certFile}`,
  ];
}

export async function startRegistry(
  options: { auth?: RegistryAuthConfig } = {},
): Promise<TestRegistry> {
  const binary = await requireCommand('docker-registry', 'docker-registry');
  const dir = await mkdtemp(join(tmpdir(), 'braid-registry-'));
  const storageDir = join(dir, 'storage');
  // Retry on a port race with another suite.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const config = join(dir, 'config.yml');
    await writeFile(
      config,
      [
        'version: 0.1',
        'log:',
        '  level: error',
        '  accesslog:',
        '    disabled: true',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${storageDir}`,
        '  delete:',
        '    enabled: true',
        'http:',
        `  addr: ${host}`,
        '  secret: braid-test-only',
        ...authYaml(options.auth),
        '',
      ].join('\n'),
    );
    const proc = startProcess(binary, ['serve', config]);
    try {
      await waitReady(`http://${host}`, proc, 15_000);
    } catch (err) {
      await proc.stop('SIGKILL');
      if (attempt < 3) continue;
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    return {
      host,
      url: `http://${host}`,
      storageDir,
      async stop() {
        await proc.stop('SIGTERM', 5000);
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}
