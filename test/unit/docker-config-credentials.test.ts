import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DockerConfigCredentials } from '../../src/oci/credentials.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function configDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'braid-docker-config-'));
  dirs.push(dir);
  return dir;
}

const login = (user: string, password: string) => ({
  auths: {
    'registry.example:5000': { auth: Buffer.from(`${user}:${password}`).toString('base64') },
  },
});

describe("docker's config.json as a long-running agent reads it", () => {
  it('sees a docker login made after it started, and a changed one', async () => {
    const dir = await configDir();
    const credentials = new DockerConfigCredentials({ env: { DOCKER_CONFIG: dir } });
    // No file yet: anonymous.
    expect(await credentials.credentialsFor('registry.example:5000')).toBeUndefined();

    await writeFile(join(dir, 'config.json'), JSON.stringify(login('ci', 'first')));
    expect(await credentials.credentialsFor('registry.example:5000')).toEqual({
      kind: 'basic',
      username: 'ci',
      password: 'first',
    });

    await writeFile(join(dir, 'config.json'), JSON.stringify(login('ci', 'second')));
    // A rewrite within the same clock tick still counts: the time is set apart on purpose.
    const later = new Date(Date.now() + 5_000);
    await utimes(join(dir, 'config.json'), later, later);
    expect(await credentials.credentialsFor('registry.example:5000')).toEqual({
      kind: 'basic',
      username: 'ci',
      password: 'second',
    });
  });

  it('does not read the file again while its time and size are unchanged', async () => {
    const dir = await configDir();
    const file = join(dir, 'config.json');
    await writeFile(file, JSON.stringify(login('ci', 'pw')));
    // A whole second, so that setting it again gives the very same time.
    const mtime = new Date(Math.floor(Date.now() / 1000) * 1000 - 10_000);
    await utimes(file, mtime, mtime);
    const credentials = new DockerConfigCredentials({ env: { DOCKER_CONFIG: dir } });
    expect(await credentials.credentialsFor('registry.example:5000')).toMatchObject({
      password: 'pw',
    });
    // Same size, time put back: the remembered config is used, not the new bytes.
    await writeFile(file, JSON.stringify(login('ci', 'qq')));
    await utimes(file, mtime, mtime);
    expect(await credentials.credentialsFor('registry.example:5000')).toMatchObject({
      password: 'pw',
    });
  });
});
