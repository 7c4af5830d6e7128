/**
 * The `braid` binary as a pipeline uses it, against a real coordinator, agent,
 * engine and registry on loopback: a closed pipe, a failed build's output and
 * exit codes, plain progress, and Ctrl-C on a real terminal (a pty made by
 * util-linux `script`).
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import {
  BRAID_BIN,
  braid,
  cleanEnv,
  startTestCoordinator,
  type TestCoordinator,
} from '../support/braid-cli.js';
import { requireCommand, requireEngine } from '../support/components.js';
import { startTestAgent, waitFor, waitForAgents, type TestAgent } from '../support/farm.js';
import { startProcess } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

/** More than a pipe holds (64 KiB): a reader that stops early leaves braid writing. */
const LOUD_FAILURE = `ARG BASE
FROM \${BASE}
ARG MARK=0
RUN i=0; while [ $i -lt 3000 ]; do echo "line $i of a long build log \${MARK}"; i=$((i+1)); done; exit 2
`;
const SLOW = `ARG BASE
FROM \${BASE}
ARG MARK=0
RUN for i in $(seq 1 120); do echo "tick $i \${MARK}"; sleep 1; done
`;
const QUICK = `ARG BASE
FROM \${BASE}
ARG MARK=0
RUN echo "built \${MARK}" > /built
`;

/** A stack trace or Node's own words on stderr: what a closed pipe must never show. */
const NODE_NOISE = /EPIPE|node:internal|^\s+at /m;

describe('braid in a pipeline', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agent: TestAgent;
  let dir: string;
  let base: string;
  let bash: string;
  let script: string;
  /** The loud build that failed, shared by the tests that read it back. */
  let failed: { id: string; code: number | null; stderr: string };

  beforeAll(async () => {
    await requireEngine();
    bash = await requireCommand('bash', 'bash');
    script = await requireCommand('script', 'bsdutils');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    base = `${registry.host}/base/busybox:latest`;
    dir = await mkdtemp(join(tmpdir(), 'braid-pipeline-'));
    for (const [name, dockerfile] of [
      ['loud', LOUD_FAILURE],
      ['slow', SLOW],
      ['quick', QUICK],
    ] as const) {
      await mkdir(join(dir, name));
      await writeFile(join(dir, name, 'Dockerfile'), dockerfile);
    }
    coordinator = await startTestCoordinator();
    agent = await startTestAgent(coordinator.address, 'p1', ['--capacity', '2']);
    await waitForAgents(coordinator.address, ['p1']);

    const result = await braid(build('loud', 'loud:1'), { timeoutMs: 120_000 });
    failed = {
      id: /^build (\S+):/m.exec(result.stderr)?.[1] ?? '',
      code: result.code,
      stderr: result.stderr,
    };
  });
  afterAll(async () => {
    await agent?.stop();
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** `braid build` of one of the Dockerfiles above for linux/amd64, cache-busted. */
  function build(name: string, tag: string, extra: string[] = []): string[] {
    return [
      'build',
      join(dir, name),
      '-t',
      `${registry.host}/pipeline/${tag}`,
      '--platform',
      'linux/amd64',
      '--build-arg',
      `BASE=${base}`,
      '--build-arg',
      `MARK=${Date.now()}-${Math.random()}`,
      '--coordinator',
      coordinator.address,
      ...extra,
    ];
  }

  /** A bash pipeline; `braid=CODE` on stderr is braid's own exit code, as PIPESTATUS saw it. */
  function pipeline(command: string) {
    return startProcess(bash, ['-c', `${command}; echo "braid=\${PIPESTATUS[0]}" >&2`], {
      env: cleanEnv({ BRAID_COORDINATOR: coordinator.address }),
    });
  }
  const braidCmd = `'${process.execPath}' '${BRAID_BIN}'`;

  it("prints a failure's error once, after its platform's last log lines, and points at braid logs", () => {
    expect(failed.code, failed.stderr.slice(-2000)).toBe(1);
    const lines = failed.stderr.trimEnd().split('\n');
    const error = /build linux\/amd64 failed at \[2\/2\] RUN .*: exit code: 2/;
    // The coordinator's error sentence appears in braid's last line and nowhere else.
    expect(lines.filter((line) => error.test(line))).toEqual([lines.at(-1)]);
    expect(lines.at(-1)).toMatch(new RegExp(`^braid: build ${failed.id} failed on linux/amd64: `));
    const tail = lines.indexOf('  last 10 log lines:');
    expect(tail).toBeGreaterThan(0);
    expect(lines[tail - 1]).toMatch(/^linux\/amd64 failed on agent p1 \(native\) after \S+$/);
    // The platform's last ten lines: its output's end (and BuildKit's ERROR line, when
    // it came last), then the pointer to the rest.
    const shown = lines.slice(tail + 1, tail + 11);
    expect(shown).toContainEqual(expect.stringMatching(/^ {4}line 2999 of a long build log/));
    for (const line of shown) {
      expect(line).toMatch(/^ {4}(line 29[89]\d of a long build log|.*ERROR: .*exit code: 2)/);
    }
    expect(lines[tail + 11]).toBe(`all log lines: braid logs ${failed.id}`);
    expect(lines.at(-2)).toBe(`all log lines: braid logs ${failed.id}`);
    // Plain progress says the platform and the build failed, without the error.
    expect(lines.filter((line) => line.startsWith('[linux/amd64] failed'))).toEqual([
      expect.stringMatching(/^\[linux\/amd64\] failed \(\S+\)$/),
    ]);
    expect(lines).toContain('[build] failed');
  });

  it('braid status of a failed build exits 1, like braid logs, in text and in JSON', async () => {
    const text = await braid(['status', failed.id, '--coordinator', coordinator.address]);
    expect(text.code, text.stderr).toBe(1);
    expect(text.stdout).toMatch(/^state +failed$/m);
    expect(text.stderr).toBe('');
    const json = await braid([
      'status',
      failed.id,
      '--output',
      'json',
      '--coordinator',
      coordinator.address,
    ]);
    expect(json.code).toBe(1);
    expect((JSON.parse(json.stdout) as { state: string }).state).toBe('failed');
    const logs = await braid(['logs', failed.id, '--coordinator', coordinator.address]);
    expect(logs.code).toBe(1);
  });

  it('braid events levels the failed build as an error', async () => {
    const result = await braid([
      'events',
      '--kind',
      'build-state',
      '--output',
      'json',
      '--coordinator',
      coordinator.address,
    ]);
    expect(result.code, result.stderr).toBe(0);
    const states = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { severity: string; message: string; buildId: string })
      .filter((event) => event.buildId === failed.id);
    const levels = new Map(states.map((e) => [e.message.split(':')[0], e.severity]));
    expect(levels.get('failed')).toBe('error');
    expect(levels.get('running')).toBe('info');
  });

  it('braid logs ID | head -1 through a real pipe ends quietly, exit 141 as for SIGPIPE', async () => {
    const shell = pipeline(`${braidCmd} logs ${failed.id} | head -1`);
    const exit = await shell.exited;
    expect(exit.code).toBe(0);
    expect(shell.stdout()).toMatch(/^\[build\] queued: linux\/amd64 -> /);
    expect(shell.stdout().trim().split('\n')).toHaveLength(1);
    expect(shell.stderr()).toBe('braid=141\n');
    expect(shell.stderr()).not.toMatch(NODE_NOISE);
  });

  it('braid events -f | head -1 ends quietly at the first event after the reader left', async () => {
    const shell = pipeline(`${braidCmd} events --follow | head -1`);
    await shell.waitForStdout(/coordinator-started/, 15_000);
    // head has its line and is gone; braid notices at its next write.
    const quick = await braid(build('quick', 'quick:1'), { timeoutMs: 120_000 });
    expect(quick.code, quick.stderr.slice(-2000)).toBe(0);
    const exit = await Promise.race([
      shell.exited,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000)),
    ]);
    if (!exit) await shell.stop('SIGKILL');
    expect(exit?.code).toBe(0);
    expect(shell.stderr()).toBe('braid=141\n');

    // The same build's plain progress: scheduled before assigned, nothing said twice.
    const lines = quick.stderr.split('\n');
    const scheduled = lines.findIndex((l) => l.startsWith('[linux/amd64] scheduled on agent p1'));
    const assigned = lines.indexOf('[linux/amd64] assigned to agent p1 (native)');
    expect(scheduled).toBeGreaterThan(0);
    expect(assigned).toBe(scheduled + 1);
    expect(lines).toContain('[linux/amd64] running on agent p1 (native)');
    expect(lines.filter((l) => /: (assigned to|running$|building$|build queued)/.test(l))).toEqual(
      [],
    );
  });

  /** `braid build` on a real pty (script(1)): what the test writes is typed at its keyboard. */
  function onTerminal(args: string[]) {
    // exec: script(1) runs $SHELL -c, and a dash left waiting as the pty's
    // foreground process would die of the Ctrl-C itself (exit 130).
    const command = `exec ${braidCmd} ${args.map((a) => `'${a}'`).join(' ')}`;
    const terminal = spawn(script, ['-qefc', command, '/dev/null'], {
      env: cleanEnv(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let screen = '';
    terminal.stdout.setEncoding('utf8').on('data', (chunk: string) => (screen += chunk));
    const exited = new Promise<number | null>((resolve) => terminal.once('exit', resolve));
    return {
      screen: () => screen,
      exited,
      type: (keys: string) => terminal.stdin.write(keys),
      kill: () => {
        if (terminal.exitCode === null) terminal.kill('SIGKILL');
      },
      /** The build's id once its RUN step prints, then the question after a Ctrl-C. */
      async interruptRunningBuild(): Promise<string> {
        const id = await waitFor('the build to run', async () =>
          /tick 1 /.test(screen) ? /build (\S+):/.exec(screen)?.[1] : undefined,
        );
        terminal.stdin.write('\x03');
        await waitFor('the question', async () =>
          screen.includes(`cancel build ${id}? y: cancel it, n: leave it running (detach)`)
            ? true
            : undefined,
        );
        return id;
      },
    };
  }

  it('Ctrl-C on a terminal asks once, and y cancels with no Enter', async () => {
    const terminal = onTerminal(build('slow', 'asked:1'));
    try {
      const id = await terminal.interruptRunningBuild();
      // One key, no Enter: in cooked mode it would wait in the line buffer for ever.
      terminal.type('y');
      expect(await terminal.exited).toBe(1);
      const screen = terminal.screen();
      expect(screen).toContain(`cancelling build ${id} (Ctrl-C again to stop waiting)`);
      expect(screen).toMatch(
        new RegExp(
          `braid: build ${id} cancelled with linux/amd64 unfinished: interrupted by the user`,
        ),
      );
      // A cancel shows no log tails.
      expect(screen).not.toContain('log lines:');
      const status = await braid(['status', id, '--coordinator', coordinator.address]);
      expect(status.code).toBe(1);
      expect(status.stdout).toMatch(/^state +cancelled$/m);
    } finally {
      terminal.kill();
    }
  });

  it('a second Ctrl-C says in one line what it left running and how to cancel it, exit 130', async () => {
    const terminal = onTerminal(build('slow', 'twice:1'));
    try {
      const id = await terminal.interruptRunningBuild();
      terminal.type('\x03');
      expect(await terminal.exited).toBe(130);
      const last = terminal.screen().trimEnd().split('\r\n').at(-1);
      expect(last).toBe(
        `stopped waiting; build ${id} is still running: braid logs -f ${id} follows it, braid cancel ${id} cancels it`,
      );
      expect(terminal.screen()).not.toMatch(NODE_NOISE);
      const running = await braid(['status', id, '--coordinator', coordinator.address]);
      expect(running.stdout).toMatch(/^state +running$/m);
      const cancel = await braid(['cancel', id, '--coordinator', coordinator.address]);
      expect(cancel.code, cancel.stderr).toBe(0);
    } finally {
      terminal.kill();
    }
  });
});
