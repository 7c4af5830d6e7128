/**
 * Run one command on the SSH host and collect what it prints, with a
 * deadline and a bound on the output kept. The command line goes to the
 * remote user's shell as is: callers pass fixed text, never user input.
 */
import type { ClientChannel } from 'ssh2';
import type { SshConnection } from './connection.js';
import { SshError } from './errors.js';

export interface RemoteCommandOptions {
  /** How long to wait for the SSH connection to be (re)established. */
  waitMs: number;
  /** Deadline of the command itself. */
  timeoutMs: number;
  /** Bytes of stdout (and of stderr) kept; the rest is dropped. */
  maxOutputBytes?: number;
}

export interface RemoteCommandResult {
  /** Exit status; null when the command died of a signal. */
  code: number | null;
  stdout: string;
  stderr: string;
}

export async function runRemoteCommand(
  connection: SshConnection,
  command: string,
  options: RemoteCommandOptions,
): Promise<RemoteCommandResult> {
  const client = await connection.client(options.waitMs);
  const limit = options.maxOutputBytes ?? 1024 * 1024;
  const target = connection.target.display;
  return new Promise<RemoteCommandResult>((resolve, reject) => {
    client.exec(command, (err, channel: ClientChannel) => {
      if (err) {
        reject(
          new SshError('unavailable', target, `cannot run "${command}": ${err.message}`, {
            cause: err,
          }),
        );
        return;
      }
      const stdout = boundedText(limit);
      const stderr = boundedText(limit);
      let code: number | null = null;
      const timer = setTimeout(() => {
        channel.close();
        reject(
          new SshError(
            'deadline_exceeded',
            target,
            `"${command}" did not finish within ${options.timeoutMs} ms`,
          ),
        );
      }, options.timeoutMs);
      channel.on('data', (chunk: Buffer) => stdout.add(chunk));
      channel.stderr.on('data', (chunk: Buffer) => stderr.add(chunk));
      channel.on('exit', (status: number | null) => {
        code = typeof status === 'number' ? status : null;
      });
      channel.on('close', () => {
        clearTimeout(timer);
        resolve({ code, stdout: stdout.text(), stderr: stderr.text() });
      });
    });
  });
}

function boundedText(limit: number) {
  const chunks: Buffer[] = [];
  let size = 0;
  return {
    add(chunk: Buffer): void {
      if (size >= limit) return;
      const kept = chunk.subarray(0, limit - size);
      chunks.push(kept);
      size += kept.length;
    },
    text: (): string => Buffer.concat(chunks).toString('utf8'),
  };
}
