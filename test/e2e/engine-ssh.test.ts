/**
 * The engine over SSH against a real OpenSSH sshd on 127.0.0.1: the remote
 * engine is this machine's, reached only through the forwarded socket.
 */
import { createHash, randomInt, randomUUID } from 'node:crypto';
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extract } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binfmtReader, emulatedPlatforms, nativePlatform } from '../../src/agent/capabilities.js';
import { createEngine, type Engine, type EngineOptions } from '../../src/agent/engine.js';
import { pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireCommand, requireEngine } from '../support/components.js';
import {
  startTestAgent,
  startTestCoordinator,
  waitFor,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from '../support/farm.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { startSshd, type TestSshd } from '../support/sshd.js';
import { contextTar } from '../support/files.js';

/** Names of the entries of a tar stream. */
async function tarNames(stream: NodeJS.ReadableStream): Promise<string[]> {
  const names: string[] = [];
  const reader = extract();
  const done = new Promise<void>((resolve, reject) => {
    reader.on('entry', (header, body, next) => {
      names.push(header.name);
      body.on('end', next);
      body.resume();
    });
    reader.on('finish', resolve);
    reader.on('error', reject);
  });
  stream.pipe(reader);
  await done;
  return names;
}

const count = (text: string, pattern: RegExp): number => text.match(pattern)?.length ?? 0;

/** Processes whose command line holds `marker` (build containers run on this host). */
async function processesWith(marker: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((name) => /^\d+$/.test(name))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').includes(marker)) found.push(pid);
  }
  return found;
}

describe('a Docker engine over SSH (real sshd on loopback)', () => {
  let sshd: TestSshd;
  let registry: TestRegistry;
  let docker: string;
  let sshKeyscan: string;
  let dir: string;
  const engines: Engine[] = [];
  const images = new Set<string>();
  const buildId = `e2e-engine-ssh-${randomUUID()}`;

  const open = (ssh: EngineOptions['ssh'], url = sshd.url): Engine => {
    const engine = createEngine(url, { ssh });
    engines.push(engine);
    return engine;
  };
  const trusted = (extra: EngineOptions['ssh'] = {}): Engine =>
    open({ keyFiles: [sshd.clientKey], knownHostsFile: sshd.knownHosts, ...extra });
  const accepted = (): number => count(sshd.log(), /Accepted publickey for root/g);
  const stateOf = (engine: Engine): string =>
    (engine as unknown as { connectionState: string }).connectionState;

  beforeAll(async () => {
    await requireEngine();
    docker = await requireCommand('docker', 'docker.io');
    sshKeyscan = await requireCommand('ssh-keyscan', 'openssh-client');
    sshd = await startSshd();
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base', 'latest');
    dir = await mkdtemp(join(tmpdir(), 'braid-engine-ssh-'));
  });

  afterAll(async () => {
    for (const engine of engines) await engine.close();
    if (docker) {
      for (const image of images) await run(docker, ['image', 'rm', '--force', image]);
      const left = await run(docker, [
        'images',
        '--quiet',
        '--no-trunc',
        '--filter',
        `label=io.braid.build-id=${buildId}`,
      ]);
      for (const image of new Set(left.stdout.split('\n').filter(Boolean)))
        await run(docker, ['image', 'rm', '--force', image]);
    }
    await sshd?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("answers info() through the forwarded socket with the remote engine's identity", async () => {
    const before = accepted();
    const engine = trusted();
    const overSsh = await engine.info();
    const local = await createEngine('unix:///var/run/docker.sock').info();
    expect(overSsh).toEqual(local);
    expect(overSsh.serverVersion).not.toBe('');
    await waitFor('sshd to log the login', async () => (accepted() > before ? true : undefined));
    expect(await engine.hasNetwork('none')).toBe(true);
    expect(await engine.hasNetwork(`braid-no-such-network-${randomUUID()}`)).toBe(false);
    // Every call above shared the one SSH connection.
    expect(accepted()).toBe(before + 1);
  });

  it('builds with BuildKit through the forwarded socket, exports the image and removes it', async () => {
    const engine = trusted();
    const steps: string[] = [];
    const dockerfile = [
      `FROM ${registry.host}/base:latest`,
      'ARG GREETING',
      'RUN echo "$GREETING from $(uname -m)" > /greeting',
      '',
    ].join('\n');
    const { imageId } = await engine.build(
      {
        context: await contextTar({ Dockerfile: dockerfile }),
        dockerfile: 'Dockerfile',
        platform: 'linux/amd64',
        buildArgs: { GREETING: 'hello over ssh' },
        labels: { 'io.braid.build-id': buildId, 'io.braid.job-id': 'ssh-1' },
        noCache: true,
        pull: false,
        networkMode: 'none',
      },
      (event) => {
        if (event.kind === 'step' && event.state === 'completed') steps.push(event.name);
      },
      new AbortController().signal,
    );
    images.add(imageId);
    expect(steps.some((name) => name.includes('RUN echo'))).toBe(true);

    // The image is in the engine behind sshd, and its RUN step ran there.
    const created = await run(docker, ['create', '--network', 'none', imageId, 'cat', '/greeting']);
    expect(created.code, created.stderr).toBe(0);
    const container = created.stdout.trim();
    const started = await run(docker, ['start', '--attach', container]);
    await run(docker, ['rm', '--force', container]);
    expect(started.stdout.trim()).toBe('hello over ssh from x86_64');

    const names = await tarNames(await engine.exportImage(imageId));
    expect(names).toContain('manifest.json');

    await engine.removeImage(imageId);
    expect((await run(docker, ['image', 'inspect', imageId])).code).not.toBe(0);
    images.delete(imageId);
  });

  it('serves the BuildKit session over SSH channels: RUN --mount=type=secret gets the value, the image does not', async () => {
    const engine = trusted();
    // Random per run: a layer that kept it would be found below.
    const secretValue = `braid-ssh-secret-${randomUUID()}`;
    const dockerfile = [
      `FROM ${registry.host}/base:latest`,
      'ARG EXPECTED_SHA256',
      'RUN --mount=type=secret,id=tok test "$(sha256sum < /run/secrets/tok | cut -d" " -f1)" = "$EXPECTED_SHA256" && echo secret-ok > /checked',
      '',
    ].join('\n');
    const { imageId } = await engine.build(
      {
        context: await contextTar({ Dockerfile: dockerfile }),
        dockerfile: 'Dockerfile',
        platform: 'linux/amd64',
        // Build args land in the image's history: only the value's hash goes there.
        buildArgs: { EXPECTED_SHA256: createHash('sha256').update(secretValue).digest('hex') },
        labels: { 'io.braid.build-id': buildId, 'io.braid.job-id': 'ssh-secret' },
        noCache: true,
        pull: false,
        networkMode: 'none',
        session: {
          secrets: new Map([['tok', new TextEncoder().encode(secretValue)]]),
          credentials: async () => undefined,
        },
      },
      () => undefined,
      new AbortController().signal,
    );
    images.add(imageId);

    // The step ran with the secret mounted (a required mount without a session fails the build).
    const created = await run(docker, ['create', '--network', 'none', imageId, 'cat', '/checked']);
    expect(created.code, created.stderr).toBe(0);
    const container = created.stdout.trim();
    const started = await run(docker, ['start', '--attach', container]);
    await run(docker, ['rm', '--force', container]);
    expect(started.stdout.trim()).toBe('secret-ok');

    // The exported image (config and uncompressed layers) never holds the value.
    const chunks: Buffer[] = [];
    for await (const chunk of await engine.exportImage(imageId)) chunks.push(chunk as Buffer);
    const exported = Buffer.concat(chunks);
    expect(exported.includes(Buffer.from('secret-ok'))).toBe(true);
    expect(exported.includes(Buffer.from(secretValue))).toBe(false);
  });

  it('stops the remote build when the signal is aborted: closing the channel reaches the engine', async () => {
    const engine = trusted();
    const marker = String(randomInt(100_000_000, 999_999_999));
    const abort = new AbortController();
    const outcome = engine
      .build(
        {
          context: await contextTar({
            Dockerfile: `FROM ${registry.host}/base:latest\nRUN sleep ${marker}\n`,
          }),
          dockerfile: 'Dockerfile',
          platform: 'linux/amd64',
          buildArgs: {},
          labels: { 'io.braid.build-id': buildId, 'io.braid.job-id': 'ssh-abort' },
          noCache: true,
          pull: false,
          networkMode: 'none',
        },
        () => undefined,
        abort.signal,
      )
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    await waitFor(`the build container running sleep ${marker}`, async () =>
      (await processesWith(marker)).length > 0 ? true : undefined,
    );
    abort.abort();
    expect(await outcome).toMatchObject({ code: 'cancelled' });
    await waitFor(`sleep ${marker} to stop`, async () =>
      (await processesWith(marker)).length === 0 ? true : undefined,
    );
    // The connection outlives the cancelled request.
    expect((await engine.info()).serverVersion).not.toBe('');
  });

  it("reads the remote host's QEMU handlers over SSH, as this host's reader does", async () => {
    const engine = trusted();
    const native = nativePlatform(await engine.info());
    expect(engine.binfmt).toBeDefined();
    const remote = await emulatedPlatforms(native, engine.binfmt?.());
    expect(remote).toEqual(await emulatedPlatforms(native, binfmtReader()));
  });

  it('names the remote socket when the URL points at one that is not there', async () => {
    const socket = `/run/braid-no-such-${randomUUID()}.sock`;
    const engine = open(
      { keyFiles: [sshd.clientKey], knownHostsFile: sshd.knownHosts },
      `${sshd.url}${socket}`,
    );
    const err = (await engine.info().catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('unavailable');
    expect(err.message).toContain(
      `engine info failed: ssh://root@127.0.0.1:${sshd.port}: cannot open ${socket} on the remote host`,
    );
    expect(err.message).toContain('AllowStreamLocalForwarding yes');
    // The SSH connection itself is fine, and stays up.
    expect(stateOf(engine)).toBe('ready');
  });

  it('refuses a changed host key in one line naming host, type and fingerprint, before logging in', async () => {
    const knownHosts = join(dir, 'changed_known_hosts');
    const stranger = (await readFile(`${sshd.strangerKey}.pub`, 'utf8')).split(' ');
    await writeFile(knownHosts, `[127.0.0.1]:${sshd.port} ${stranger[0]} ${stranger[1]}\n`);
    const before = accepted();
    const engine = open({ keyFiles: [sshd.clientKey], knownHostsFile: knownHosts });
    const err = (await engine.info().catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('failed_precondition');
    expect(err.message).not.toContain('\n');
    expect(err.message).toContain(
      `engine info failed: ssh://root@127.0.0.1:${sshd.port}: host key changed: ` +
        `[127.0.0.1]:${sshd.port} offered ssh-ed25519 key ${sshd.hostFingerprint}, ` +
        `but ${knownHosts}:1 holds another ssh-ed25519 key for it`,
    );
    expect(err.message).toContain(`ssh-keygen -R '[127.0.0.1]:${sshd.port}' -f ${knownHosts}`);
    // Refused during the key exchange: no login, and no second try.
    await expect(engine.hasNetwork('none')).rejects.toMatchObject({ code: 'failed_precondition' });
    expect(stateOf(engine)).toBe('failed');
    expect(accepted()).toBe(before);
  });

  it('refuses an unknown host, and the ssh-keyscan line it prints makes it known', async () => {
    const knownHosts = join(dir, 'fresh_known_hosts');
    await writeFile(knownHosts, '');
    const refused = open({ keyFiles: [sshd.clientKey], knownHostsFile: knownHosts });
    const err = (await refused.info().catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('failed_precondition');
    expect(err.message).toContain(
      `host key not known: [127.0.0.1]:${sshd.port} offered ssh-ed25519 key ${sshd.hostFingerprint}, which is not in ${knownHosts}`,
    );
    const advice = new RegExp(
      `ssh-keyscan -p ${sshd.port} -t ed25519 127\\.0\\.0\\.1 >> ${knownHosts.replace(/[.]/g, '\\.')}$`,
    );
    expect(err.message).toMatch(advice);

    // Do what it says, with OpenSSH's own ssh-keyscan, hashed (-H) as cautious operators do.
    const scanned = await run(sshKeyscan, [
      '-H',
      '-p',
      String(sshd.port),
      '-t',
      'ed25519',
      '127.0.0.1',
    ]);
    expect(scanned.code, scanned.stderr).toBe(0);
    expect(scanned.stdout).toMatch(/^\|1\|/);
    await appendFile(knownHosts, scanned.stdout);
    const engine = open({ keyFiles: [sshd.clientKey], knownHostsFile: knownHosts });
    expect((await engine.info()).serverVersion).not.toBe('');
  });

  it('refuses a login with a key the host does not accept, once, without retrying', async () => {
    const connections = (): number => count(sshd.log(), /Connection from 127\.0\.0\.1/g);
    const before = connections();
    const engine = open({ keyFiles: [sshd.strangerKey], knownHostsFile: sshd.knownHosts });
    const err = (await engine.info().catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('unauthenticated');
    expect(err.message).toContain(
      `ssh://root@127.0.0.1:${sshd.port}: login refused for user root (tried key ${sshd.strangerKey} (ssh-ed25519 SHA256:`,
    );
    expect(err.message).not.toContain('PRIVATE KEY');
    await waitFor('sshd to log the connection', async () =>
      connections() > before ? true : undefined,
    );
    await expect(engine.info()).rejects.toMatchObject({ code: 'unauthenticated' });
    expect(stateOf(engine)).toBe('failed');
    expect(connections()).toBe(before + 1);
  });

  it('re-establishes a dropped connection, and one to an sshd that went away and came back', async () => {
    const engine = trusted({ connectTimeoutMs: 2_000, backoff: { baseMs: 100, maxMs: 1_000 } });
    const before = accepted();
    await engine.info();
    await waitFor('sshd to log the login', async () => (accepted() > before ? true : undefined));

    // sshd's session processes die: the connection drops under the engine.
    expect(await sshd.dropSessions()).toBeGreaterThan(0);
    await waitFor(
      'a new SSH login',
      async () => (accepted() === before + 2 ? true : undefined),
      20_000,
    );
    expect((await engine.info()).serverVersion).not.toBe('');

    // The host goes away: calls fail with a clear line while it is gone.
    await sshd.halt();
    await waitFor('the connection to notice', async () =>
      stateOf(engine) !== 'ready' ? true : undefined,
    );
    const gone = (await engine.info().catch((e: unknown) => e)) as Error & { code: string };
    expect(gone.code).toBe('unavailable');
    expect(gone.message).toMatch(
      new RegExp(
        `engine info failed: ssh://root@127\\.0\\.0\\.1:${sshd.port}: not connected within 2000 ms`,
      ),
    );

    // It comes back on the same port: the next call works again.
    await sshd.resume();
    const info = await waitFor('the engine over SSH again', () =>
      engine.info().catch(() => undefined),
    );
    expect(info.serverVersion).not.toBe('');
    expect(stateOf(engine)).toBe('ready');
  });
});

describe('braid agent --engine ssh://', () => {
  let sshd: TestSshd;
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agent: TestAgent | undefined;
  let skopeo: string;
  let dir: string;

  beforeAll(async () => {
    await requireEngine();
    skopeo = await requireCommand('skopeo', 'skopeo');
    sshd = await startSshd();
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base', 'latest');
    coordinator = await startTestCoordinator();
    dir = await mkdtemp(join(tmpdir(), 'braid-agent-ssh-'));
    await writeFile(
      join(dir, 'Dockerfile'),
      'ARG BASE\nFROM ${BASE}\nRUN uname -m > /arch\nCMD ["cat", "/arch"]\n',
    );
  });

  afterAll(async () => {
    await agent?.stop();
    await coordinator?.stop();
    await sshd?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('exits 1 with one line when the host key is not known, instead of joining', async () => {
    const empty = join(dir, 'known_hosts');
    await writeFile(empty, '');
    const result = await braid([
      'agent',
      '--coordinator',
      coordinator.address,
      '--name',
      'ssh-refused',
      '--engine',
      sshd.url,
      '--ssh-known-hosts',
      empty,
      '--ssh-key',
      sshd.clientKey,
      '--cache-dir',
      join(dir, 'cache-refused'),
    ]);
    expect(result.code).toBe(1);
    const lines = result.stderr.split('\n').filter((line) => line.startsWith('braid: '));
    expect(lines).toEqual([
      expect.stringContaining(
        `braid: engine info failed: ssh://root@127.0.0.1:${sshd.port}: host key not known: [127.0.0.1]:${sshd.port} offered ssh-ed25519 key ${sshd.hostFingerprint}`,
      ),
    ]);
  });

  it('joins a coordinator and builds a platform on the engine behind sshd', async () => {
    agent = await startTestAgent(coordinator.address, 'ssh-builder', [
      '--engine',
      sshd.url,
      '--ssh-known-hosts',
      sshd.knownHosts,
      '--ssh-key',
      sshd.clientKey,
    ]);
    await waitForAgents(coordinator.address, ['ssh-builder']);
    const tag = `${registry.host}/ssh/hello:1`;
    const result = await braid(
      [
        'build',
        dir,
        '-t',
        tag,
        '--platform',
        'linux/amd64',
        '--build-arg',
        `BASE=${registry.host}/base:latest`,
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    const raw = await run(skopeo, ['inspect', '--raw', '--tls-verify=false', `docker://${tag}`]);
    expect(raw.code, raw.stderr).toBe(0);
    const index = JSON.parse(raw.stdout) as {
      manifests: { platform: { os: string; architecture: string } }[];
    };
    // The image, then its provenance attestation (unknown/unknown), as BuildKit stores it.
    expect(index.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`)).toEqual([
      'linux/amd64',
      'unknown/unknown',
    ]);
    expect(count(sshd.log(), /Accepted publickey for root/g)).toBeGreaterThan(0);
    expect(agent.process.stderr()).toContain('"msg":"engine over ssh"');
    expect(agent.process.stderr()).not.toContain('PRIVATE KEY');
  });

  it('leaves the farm with one line when the host key changes under it, instead of failing jobs', async () => {
    const knownHosts = join(dir, 'rekeyed_known_hosts');
    await writeFile(knownHosts, `${sshd.hostKeyLine}\n`);
    const rekeyed = await startTestAgent(coordinator.address, 'ssh-rekeyed', [
      '--engine',
      sshd.url,
      '--ssh-known-hosts',
      knownHosts,
      '--ssh-key',
      sshd.clientKey,
    ]);
    try {
      await waitForAgents(coordinator.address, ['ssh-rekeyed']);
      // From the agent's side the host now has another key; the connection drops.
      const stranger = (await readFile(`${sshd.strangerKey}.pub`, 'utf8')).split(' ');
      await writeFile(knownHosts, `[127.0.0.1]:${sshd.port} ${stranger[0]} ${stranger[1]}\n`);
      expect(await sshd.dropSessions()).toBeGreaterThan(0);
      const exit = await rekeyed.process.exited;
      expect(exit.code, rekeyed.process.stderr().slice(-2000)).toBe(1);
      const lines = rekeyed.process
        .stderr()
        .split('\n')
        .filter((line) => line.startsWith('braid: '));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`127.0.0.1:${sshd.port}`);
      expect(lines[0]).toContain('host key changed');
      await waitFor('the coordinator to drop the agent', async () => {
        const listed = await braid(['agents', '--coordinator', coordinator.address]);
        return listed.code === 0 && !listed.stdout.includes('ssh-rekeyed') ? true : undefined;
      });
    } finally {
      await rekeyed.stop('SIGKILL');
    }
  });
});
