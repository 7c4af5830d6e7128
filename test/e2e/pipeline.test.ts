/**
 * A buildx pipeline's command line on the farm, end to end with the real
 * `braid` binary, coordinator and agent processes, the engine and a loopback
 * registry: `--secret` on four platforms (and the value found nowhere the
 * farm writes), `--ssh default` with a real ssh-agent listed from a RUN step,
 * and `--keep-going` with one platform failing.
 */
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireCommand, requireEngine, requireQemu } from '../support/components.js';
import {
  buildStatus,
  startTestAgent,
  startTestCoordinator,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from '../support/farm.js';
import { run, startProcess, type Started } from '../support/process.js';
import { writeHtpasswd } from '../support/registry-auth.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { filesContaining } from '../support/files.js';

const exec = promisify(execFile);
const PLATFORMS = ['linux/amd64', 'linux/arm64', 'linux/ppc64le', 'linux/s390x'];

/**
 * A static x86-64 program that lists an ssh-agent's keys (the agent
 * protocol's REQUEST_IDENTITIES), as `ssh-add -l` would: busybox has no
 * ssh-add and no image can be pulled here.
 */
const LISTER_C = String.raw`#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static int readn(int fd, unsigned char *b, size_t n) {
  size_t o = 0;
  while (o < n) { ssize_t r = read(fd, b + o, n - o); if (r <= 0) return -1; o += r; }
  return 0;
}
static unsigned u32(const unsigned char *p) {
  return ((unsigned)p[0] << 24) | ((unsigned)p[1] << 16) | ((unsigned)p[2] << 8) | p[3];
}
int main(void) {
  const char *path = getenv("SSH_AUTH_SOCK");
  if (!path) { fprintf(stderr, "SSH_AUTH_SOCK is not set\n"); return 2; }
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a; memset(&a, 0, sizeof a); a.sun_family = AF_UNIX;
  strncpy(a.sun_path, path, sizeof a.sun_path - 1);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 3; }
  unsigned char req[5] = {0, 0, 0, 1, 11};
  if (write(fd, req, 5) != 5) { perror("write"); return 4; }
  unsigned char h[4]; if (readn(fd, h, 4)) return 5;
  unsigned len = u32(h); if (len > 262144) return 6;
  unsigned char *m = malloc(len); if (readn(fd, m, len)) return 7;
  if (m[0] != 12) { fprintf(stderr, "agent answered %d\n", m[0]); return 8; }
  unsigned n = u32(m + 1), off = 5;
  printf("agent holds %u keys\n", n);
  for (unsigned i = 0; i < n; i++) {
    unsigned bl = u32(m + off); off += 4;
    unsigned tl = u32(m + off);
    printf("key %.*s ", (int)tl, (char *)m + off + 4); off += bl;
    unsigned cl = u32(m + off); off += 4;
    printf("%.*s\n", (int)cl, (char *)m + off); off += cl;
  }
  return 0;
}
`;

describe('a buildx pipeline command line on the farm', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agents: TestAgent[] = [];
  let dir: string;
  let base: string;
  let sshAgent: Started | undefined;
  /** htpasswd registries: the agents' docker config holds the right login for one, a wrong one for the other. */
  let privateRegistry: TestRegistry;
  let wrongRegistry: TestRegistry;
  const secretValue = `braid-secret-${randomUUID()}`;

  beforeAll(async () => {
    await requireEngine();
    for (const handler of ['qemu-aarch64', 'qemu-ppc64le', 'qemu-s390x'])
      await requireQemu(handler);
    await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    base = `${registry.host}/base/busybox:latest`;
    dir = await mkdtemp(join(tmpdir(), 'braid-pipeline-'));
    privateRegistry = await startRegistry({
      auth: { kind: 'htpasswd', file: await writeHtpasswd(dir, 'builder', 'pa55') },
    });
    await mkdir(join(dir, 'wrong'));
    wrongRegistry = await startRegistry({
      auth: { kind: 'htpasswd', file: await writeHtpasswd(join(dir, 'wrong'), 'builder', 'other') },
    });
    for (const target of [privateRegistry, wrongRegistry]) {
      const copied = await run('skopeo', [
        'copy',
        '--all',
        '--src-tls-verify=false',
        '--dest-tls-verify=false',
        '--dest-creds',
        target === privateRegistry ? 'builder:pa55' : 'builder:other',
        '--quiet',
        `docker://${base}`,
        `docker://${target.host}/private/base:latest`,
      ]);
      expect(copied.code, copied.stderr).toBe(0);
    }
    // The agents' own docker login: right for one registry, wrong for the other.
    const dockerConfig = join(dir, 'docker-config');
    await mkdir(dockerConfig);
    const login = (user: string, password: string) => ({
      auth: Buffer.from(`${user}:${password}`).toString('base64'),
    });
    await writeFile(
      join(dockerConfig, 'config.json'),
      JSON.stringify({
        auths: {
          [privateRegistry.host]: login('builder', 'pa55'),
          [wrongRegistry.host]: login('builder', 'pa55'),
        },
      }),
    );
    coordinator = await startTestCoordinator();
    agents = [
      await startTestAgent(coordinator.address, 'p1', ['--capacity', '2'], {
        DOCKER_CONFIG: dockerConfig,
      }),
      await startTestAgent(coordinator.address, 'p2', ['--capacity', '2'], {
        DOCKER_CONFIG: dockerConfig,
      }),
    ];
    await waitForAgents(coordinator.address, ['p1', 'p2']);
  }, 600_000);

  afterAll(async () => {
    await sshAgent?.stop('SIGTERM', 5000);
    for (const agent of agents) await agent.stop();
    await coordinator?.stop();
    await registry?.stop();
    await privateRegistry?.stop();
    await wrongRegistry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function context(name: string, dockerfile: string): Promise<string> {
    const ctx = join(dir, name);
    await exec('mkdir', ['-p', ctx]);
    await writeFile(join(ctx, 'Dockerfile'), dockerfile);
    return ctx;
  }

  it('hands --secret to RUN --mount=type=secret on four platforms and writes its value nowhere', async () => {
    const secretFile = join(dir, 'token.txt');
    await writeFile(secretFile, secretValue);
    const digestOfValue = createHash('sha256').update(secretValue).digest('hex');
    const ctx = await context(
      'secret',
      [
        `FROM ${base}`,
        `RUN --mount=type=secret,id=tok test "$(sha256sum < /run/secrets/tok | cut -d" " -f1)" = "${digestOfValue}" && uname -m > /built-with-secret`,
        '',
      ].join('\n'),
    );
    const metadataFile = join(dir, 'secret-metadata.json');
    const tag = `${registry.host}/team/secret:1`;
    const built = await braid(
      [
        'build',
        ctx,
        '-t',
        tag,
        '--platform',
        PLATFORMS.join(','),
        '--secret',
        `id=tok,src=${secretFile}`,
        '--metadata-file',
        metadataFile,
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 600_000 },
    );
    expect(built.code, built.stderr).toBe(0);
    const buildId = /build (b[0-9a-z]+)/.exec(built.stderr)?.[1] ?? '';
    expect(buildId).not.toBe('');

    const status = await braid([
      'status',
      buildId,
      '--output',
      'json',
      '--coordinator',
      coordinator.address,
    ]);
    expect(status.code).toBe(0);
    expect((JSON.parse(status.stdout) as { state: string }).state).toBe('succeeded');
    const logs = await braid([
      'logs',
      buildId,
      '--progress',
      'json',
      '--coordinator',
      coordinator.address,
    ]);
    const builds = await braid([
      'builds',
      '--output',
      'json',
      '--coordinator',
      coordinator.address,
    ]);

    // The pushed image, every platform's layers and configs.
    const copied = join(dir, 'secret-image');
    const skopeo = await run('skopeo', [
      'copy',
      '--all',
      '--src-tls-verify=false',
      '--quiet',
      `docker://${tag}`,
      `oci:${copied}:pulled`,
    ]);
    expect(skopeo.code, skopeo.stderr).toBe(0);
    // The check can fail: the built layer is found by what the RUN step wrote.
    expect(await filesContaining(copied, 's390x')).not.toEqual([]);

    const everywhere = [
      built.stdout,
      built.stderr,
      status.stdout,
      logs.stdout,
      builds.stdout,
      await readFile(metadataFile, 'utf8'),
      coordinator.process.stdout(),
      coordinator.process.stderr(),
      ...agents.flatMap((a) => [a.process.stdout(), a.process.stderr()]),
    ];
    expect(everywhere.filter((text) => text.includes(secretValue))).toEqual([]);
    expect(await filesContaining(coordinator.dataDir, secretValue)).toEqual([]);
    expect(await filesContaining(copied, secretValue)).toEqual([]);
  });

  it('refuses a secret over 500 KiB in one line that names it, and submits nothing', async () => {
    const big = join(dir, 'big.bin');
    await writeFile(big, Buffer.alloc(500 * 1024 + 1, 0x61));
    const ctx = await context('big-secret', `FROM ${base}\nRUN true\n`);
    const before = await braid([
      'builds',
      '--output',
      'json',
      '--coordinator',
      coordinator.address,
    ]);
    const refused = await braid([
      'build',
      ctx,
      '-t',
      `${registry.host}/team/big:1`,
      '--secret',
      `id=big,src=${big}`,
      '--coordinator',
      coordinator.address,
    ]);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/--secret.*big.*500 KiB/);
    const after = await braid(['builds', '--output', 'json', '--coordinator', coordinator.address]);
    expect(after.stdout).toBe(before.stdout);
  });

  it('forwards the ssh-agent of the machine that ran braid build to RUN --mount=type=ssh', async () => {
    const gcc = await requireCommand('gcc', 'gcc');
    const sshKeygen = await requireCommand('ssh-keygen', 'openssh-client');
    const sshAgentBin = await requireCommand('ssh-agent', 'openssh-client');
    const sshAdd = await requireCommand('ssh-add', 'openssh-client');
    const ctx = await context(
      'ssh',
      [
        `FROM ${base}`,
        'COPY list-agent-keys /usr/local/bin/list-agent-keys',
        'RUN --mount=type=ssh /usr/local/bin/list-agent-keys',
        '',
      ].join('\n'),
    );
    await writeFile(join(dir, 'lister.c'), LISTER_C);
    const compiled = await run(gcc, [
      '-static',
      '-O2',
      '-o',
      join(ctx, 'list-agent-keys'),
      join(dir, 'lister.c'),
    ]);
    expect(compiled.code, compiled.stderr).toBe(0);
    await chmod(join(ctx, 'list-agent-keys'), 0o755);

    const key = join(dir, 'id_ed25519');
    const made = await run(sshKeygen, [
      '-q',
      '-t',
      'ed25519',
      '-N',
      '',
      '-C',
      'braid-e2e-key',
      '-f',
      key,
    ]);
    expect(made.code, made.stderr).toBe(0);
    const socket = join(dir, 'agent.sock');
    sshAgent = startProcess(sshAgentBin, ['-D', '-a', socket]);
    for (let i = 0; i < 50 && !(await stat(socket).catch(() => undefined)); i++)
      await new Promise((r) => setTimeout(r, 100));
    const added = await run(sshAdd, [key], { env: { ...process.env, SSH_AUTH_SOCK: socket } });
    expect(added.code, added.stderr).toBe(0);

    const built = await braid(
      [
        'build',
        ctx,
        '-t',
        `${registry.host}/team/ssh:1`,
        '--platform',
        'linux/amd64',
        '--ssh',
        'default',
        '--progress',
        'plain',
        '--no-cache',
        '--coordinator',
        coordinator.address,
      ],
      { env: { SSH_AUTH_SOCK: socket }, timeoutMs: 300_000 },
    );
    expect(built.code, built.stderr).toBe(0);
    expect(built.stderr).toMatch(/agent holds 1 keys/);
    expect(built.stderr).toMatch(/key ssh-ed25519 braid-e2e-key/);

    // --detach cannot forward: refused before anything is submitted.
    const detached = await braid(
      [
        'build',
        ctx,
        '-t',
        `${registry.host}/team/ssh:2`,
        '--ssh',
        'default',
        '--detach',
        '--coordinator',
        coordinator.address,
      ],
      { env: { SSH_AUTH_SOCK: socket } },
    );
    expect(detached.code).toBe(2);
    expect(detached.stderr).toMatch(/--ssh.*--detach|--detach.*--ssh/);
  });

  it("builds FROM a registry that needs a login with the agents' docker credentials, and fails in the registry's words when they are wrong", async () => {
    const good = await context(
      'private-from',
      `FROM ${privateRegistry.host}/private/base:latest\nRUN uname -m > /arch\n`,
    );
    const built = await braid(
      [
        'build',
        good,
        '-t',
        `${registry.host}/team/private-from:1`,
        '--platform',
        'linux/amd64,linux/s390x',
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(built.code, built.stderr).toBe(0);

    const wrong = await context(
      'wrong-from',
      `FROM ${wrongRegistry.host}/private/base:latest\nRUN uname -m > /arch\n`,
    );
    const refused = await braid(
      [
        'build',
        wrong,
        '-t',
        `${registry.host}/team/wrong-from:1`,
        '--platform',
        'linux/amd64',
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/401 Unauthorized|unauthorized/i);
  });

  it('lets the other platforms finish with --keep-going when one fails, and moves no tag', async () => {
    const ctx = await context(
      'keep-going',
      [
        `FROM ${base}`,
        'ARG TARGETARCH',
        'RUN if [ "$TARGETARCH" = arm64 ]; then echo "failing on purpose for $TARGETARCH"; exit 7; fi; sleep 2; echo "done $TARGETARCH"',
        '',
      ].join('\n'),
    );
    const built = await braid(
      [
        'build',
        ctx,
        '-t',
        `${registry.host}/team/keep-going:1`,
        '--platform',
        PLATFORMS.join(','),
        '--keep-going',
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 600_000 },
    );
    expect(built.code, built.stderr).toBe(1);
    const buildId = /build (b[0-9a-z]+)/.exec(built.stderr)?.[1] ?? '';
    expect(buildId, built.stderr).not.toBe('');
    const status = await buildStatus(coordinator.address, buildId);
    expect(status?.state).toBe('failed');
    const states = Object.fromEntries(status?.jobs.map((j) => [j.platform, j.state]) ?? []);
    expect(states).toEqual({
      'linux/amd64': 'succeeded',
      'linux/arm64': 'failed',
      'linux/ppc64le': 'succeeded',
      'linux/s390x': 'succeeded',
    });
    // The others ran to the end: their steps' output and durations are shown.
    expect(built.stderr).toMatch(/done s390x/);
    expect(built.stderr).toMatch(/\[linux\/s390x\] succeeded sha256:[0-9a-f]{64} \(\d/);
    expect(built.stderr).toMatch(/linux\/arm64.*failing on purpose|failing on purpose for arm64/);
    const tags = await fetch(`${registry.url}/v2/team/keep-going/tags/list`);
    const listed =
      tags.status === 404 ? [] : ((await tags.json()) as { tags: string[] | null }).tags;
    expect(listed ?? []).toEqual([]);
  });
});
