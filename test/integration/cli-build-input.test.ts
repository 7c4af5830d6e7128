import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';

describe('braid build with bad input', () => {
  let coordinator: TestCoordinator;
  let dir: string;

  beforeAll(async () => {
    coordinator = await startTestCoordinator();
    dir = await mkdtemp(join(tmpdir(), 'braid-input-'));
    await writeFile(join(dir, 'Dockerfile'), 'FROM scratch\n');
  });
  afterAll(async () => {
    await coordinator?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const cases: [string, (d: string) => string[], RegExp][] = [
    [
      'an unknown platform',
      (d) => [d, '-t', '127.0.0.1:5000/a/b:1', '--platform', 'linux/amd64,linux/sparc9'],
      /^braid: invalid platform "linux\/sparc9": unknown architecture "sparc9"/,
    ],
    [
      'a malformed tag',
      (d) => [d, '-t', '127.0.0.1:5000/Team/App:1'],
      /^braid: invalid image reference "127\.0\.0\.1:5000\/Team\/App:1": repository name must be lowercase/,
    ],
    [
      'a missing Dockerfile',
      (d) => [d, '-t', '127.0.0.1:5000/a/b:1', '-f', join(d, 'Nope.Dockerfile')],
      /^braid: .*Nope\.Dockerfile/,
    ],
    [
      'a context path that does not exist',
      (d) => [join(d, 'absent'), '-t', '127.0.0.1:5000/a/b:1'],
      /^braid: .*absent/,
    ],
    [
      'a build arg name that is not an identifier',
      (d) => [d, '-t', '127.0.0.1:5000/a/b:1', '--build-arg', 'BAD-NAME=1'],
      /^braid: --build-arg "BAD-NAME=1": "BAD-NAME" is not a valid name/,
    ],
    ['no tag', (d) => [d], /^braid: no tag given: use -t REGISTRY\/REPO:TAG/],
    [
      'a request id with a space in it',
      (d) => [d, '-t', '127.0.0.1:5000/a/b:1', '--request-id', 'ci run 42'],
      /^braid: .*request id "ci run 42": expected 1 to 64 of A-Z a-z 0-9 \. _ : -/,
    ],
  ];

  it.each(cases)(
    'refuses %s with one line and exit 2, submitting nothing',
    async (_name, args, line) => {
      const result = await braid(['build', ...args(dir), '--coordinator', coordinator.address]);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr.trim()).toMatch(line);
      const builds = await braid([
        'builds',
        '--coordinator',
        coordinator.address,
        '--output',
        'json',
      ]);
      expect(builds.code, builds.stderr).toBe(0);
      expect(builds.stdout.trim()).toBe('');
    },
  );

  it('fails at once, naming the platform and what the farm offers, when no agent can build it', async () => {
    const result = await braid([
      'build',
      dir,
      '-t',
      '127.0.0.1:5000/a/b:1',
      '--platform',
      'linux/s390x',
      '--coordinator',
      coordinator.address,
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split('\n').pop()).toMatch(
      /^braid: linux\/s390x: no connected agent can build it \(.*no agents connected/,
    );
    const builds = await braid([
      'builds',
      '--coordinator',
      coordinator.address,
      '--output',
      'json',
    ]);
    expect(builds.stdout.trim()).toBe('');
  });
});
