import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BRAID_BIN,
  braid,
  cleanEnv,
  startTestCoordinator,
  type TestCoordinator,
} from '../support/braid-cli.js';
import { run } from '../support/process.js';

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

/** `cd CWD && braid ARGS < STDIN`, as a user types it in a shell. */
function braidIn(cwd: string, args: string[], stdin = '/dev/null') {
  return run(
    '/bin/sh',
    ['-c', 'cd "$0" && exec "$@" < "$BRAID_TEST_STDIN"', cwd, process.execPath, BRAID_BIN, ...args],
    { env: cleanEnv({ BRAID_TEST_STDIN: stdin }), timeoutMs: 30_000 },
  );
}

/** Entry names of a tar file, as GNU tar lists them. */
function tarNames(file: string): string[] {
  return execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n');
}

describe('braid build takes its context and Dockerfile as docker build does', () => {
  let coordinator: TestCoordinator;
  let dir: string;
  let ctx: string;
  const tag = '127.0.0.1:5000/a/b:1';
  // No agent is connected: a submit that reaches the scheduler has passed the
  // coordinator's check that the Dockerfile is in the uploaded context.
  const scheduled = /^braid: linux\/amd64: no connected agent can build it/;

  beforeAll(async () => {
    coordinator = await startTestCoordinator();
    dir = await mkdtemp(join(tmpdir(), 'braid-input-'));
    ctx = join(dir, 'ctx');
    await mkdir(ctx);
    await writeFile(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY app.txt /\n');
    await writeFile(join(ctx, 'app.txt'), 'hello\n');
  });
  afterAll(async () => {
    await coordinator?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const contexts = async () => {
    const store = join(coordinator.dataDir, 'contexts', 'sha256');
    return (await readdir(store)).filter((name) => /^[0-9a-f]{64}$/.test(name)).sort();
  };
  const build = (cwd: string, args: string[], stdin?: string) =>
    braidIn(
      cwd,
      [
        'build',
        ...args,
        '-t',
        tag,
        '--platform',
        'linux/amd64',
        '--coordinator',
        coordinator.address,
      ],
      stdin,
    );

  it('uploads a Dockerfile from outside the context (-f ../Dockerfile) inside the context tar', async () => {
    const before = await contexts();
    const result = await build(ctx, ['-f', '../Dockerfile', '.']);
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toMatch(
      /^context sha256:[0-9a-f]{12}: 2 files, \d+ bytes, \d+ bytes uploaded$/m,
    );
    expect(result.stderr.trim().split('\n').pop()).toMatch(scheduled);
    const added = (await contexts()).filter((name) => !before.includes(name));
    expect(added).toHaveLength(1);
    const uploaded = join(coordinator.dataDir, 'contexts', 'sha256', added[0] as string);
    expect(tarNames(uploaded)).toEqual([
      '.braid-dockerfile/',
      '.braid-dockerfile/Dockerfile',
      'app.txt',
    ]);
  });

  it('reads a context tar on stdin (- < ctx.tar) and packs it as the directory', async () => {
    await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY app.txt /\n');
    try {
      const fromDir = await build(dir, ['ctx']);
      expect(fromDir.stderr.trim().split('\n').pop()).toMatch(scheduled);
      const before = await contexts();
      const tarFile = join(dir, 'ctx.tar');
      execFileSync('tar', ['-C', ctx, '-cf', tarFile, '.']);
      const result = await build(dir, ['-'], tarFile);
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr.trim().split('\n').pop()).toMatch(scheduled);
      // The same tree packs to the same digest: the coordinator already had it.
      expect(result.stderr).toMatch(
        /^context sha256:[0-9a-f]{12}: 2 files, \d+ bytes, 0 bytes uploaded$/m,
      );
      expect(await contexts()).toEqual(before);
    } finally {
      await rm(join(ctx, 'Dockerfile'));
    }
  });

  it('reads a Dockerfile on stdin (-f -)', async () => {
    const result = await build(ctx, ['-f', '-', '.'], join(dir, 'Dockerfile'));
    expect(result.code, result.stderr).toBe(1);
    // The same bytes as -f ../Dockerfile: nothing new to upload.
    expect(result.stderr).toMatch(/ 0 bytes uploaded$/m);
    expect(result.stderr.trim().split('\n').pop()).toMatch(scheduled);
  });

  it.each([
    ['https://github.com/docker/buildx.git#v0.12.0:examples', 'git'],
    ['git@github.com:docker/buildx.git', 'git'],
    ['https://example.com/context.tar.gz', 'URL'],
  ])('refuses the remote context %s in one line, exit 2, submitting nothing', async (url, kind) => {
    const result = await build(dir, [url]);
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(
      new RegExp(`^braid: braid build does not support ${kind} contexts \\(.*\\): .*\n$`),
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
