/**
 * Child processes a test starts and stops by handle (pid), never by name.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Started {
  readonly child: ChildProcess;
  readonly pid: number;
  stdout(): string;
  stderr(): string;
  readonly exited: Promise<Exit>;
  /** Wait until stdout matches; rejects on exit or after `timeoutMs`. */
  waitForStdout(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Send `signal`, then SIGKILL after `timeoutMs`; resolves on exit. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<Exit>;
}

export function startProcess(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Started {
  const child = spawn(command, args, {
    env: options.env ?? process.env,
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  if (child.pid === undefined) throw new Error(`cannot start ${command}`);
  const pid = child.pid;
  let done = false;
  void exited.then(() => (done = true));
  return {
    child,
    pid,
    stdout: () => out,
    stderr: () => err,
    exited,
    async waitForStdout(pattern, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const match = pattern.exec(out);
        if (match) return match;
        if (done)
          throw new Error(`${command} exited before printing ${pattern}: ${err.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(
        `${command} did not print ${pattern} within ${timeoutMs} ms: ${err.slice(-2000)}`,
      );
    },
    async stop(signal = 'SIGTERM', timeoutMs = 10_000) {
      if (!done) {
        process.kill(pid, signal);
        const timer = setTimeout(() => {
          if (!done) process.kill(pid, 'SIGKILL');
        }, timeoutMs);
        await exited;
        clearTimeout(timer);
      }
      return exited;
    },
  };
}

/** Run to completion; never throws on a non-zero exit. */
export async function run(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, {
    env: options.env ?? process.env,
    // No input: /dev/null, so a child that exits early cannot fail a write (EPIPE).
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  if (child.stdin) {
    // A child that does not read all of its input closes the pipe: not the test's error.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input);
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}
