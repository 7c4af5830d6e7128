/**
 * The QEMU version a job ran under, for its provenance: the binfmt_misc
 * handler's interpreter is asked (`--version`) once per handler, within a
 * deadline, and its answer parsed ("qemu-aarch64 version 7.2.0 (Debian
 * 1:7.2+dfsg-7+deb12u7)" -> "7.2.0 (Debian 1:7.2+dfsg-7+deb12u7)"). What
 * cannot be learned is '' and never fails a job.
 */
import { spawn } from 'node:child_process';
import type { Logger } from '../log.js';
import { formatPlatform, platformsEqual, type Platform } from '../oci/platform.js';
import type { EmulatedPlatform } from './capabilities.js';

/** Runs `interpreter --version` as `handler` and resolves with what it printed. */
export type VersionProbe = (interpreter: string, handler: string) => Promise<string>;

export const VERSION_PROBE_TIMEOUT_MS = 5_000;
const MAX_OUTPUT_BYTES = 64 * 1024;
const MAX_VERSION_CHARS = 200;

/** `qemu-<arch> version X.Y.Z (distro build)`: the version with the distro's suffix, or ''. */
export function parseQemuVersion(output: string): string {
  const match = /\bversion\s+(\d+(?:\.\d+)+\S*)(?:\s+(\([^()\n]*\)))?/i.exec(output);
  if (!match) return '';
  const [, version = '', suffix] = match;
  return (suffix ? `${version} ${suffix}` : version).slice(0, MAX_VERSION_CHARS);
}

/**
 * Runs the interpreter on this host. argv[0] is the handler's name: Debian's
 * `*-binfmt-P` interpreters refuse to run unless started by the kernel, as
 * they tell by their own name.
 */
export function localVersionProbe(timeoutMs = VERSION_PROBE_TIMEOUT_MS): VersionProbe {
  return (interpreter, handler) =>
    new Promise((resolve, reject) => {
      // spawn, not execFile: only spawn passes argv0 on.
      const child = spawn(interpreter, ['--version'], {
        argv0: handler,
        stdio: ['ignore', 'pipe', 'ignore'],
        env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' },
      });
      const chunks: Buffer[] = [];
      let bytes = 0;
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${interpreter} --version: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      child.stdout.on('data', (chunk: Buffer) => {
        if (bytes >= MAX_OUTPUT_BYTES) return;
        chunks.push(chunk);
        bytes += chunk.length;
      });
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) resolve(Buffer.concat(chunks).toString('utf8'));
        else reject(new Error(`${interpreter} --version exited ${code ?? signal}`));
      });
    });
}

/** Versions of the agent's QEMU handlers, each asked at most once. */
export class EmulatorVersions {
  private readonly asked = new Map<string, Promise<string>>();

  /**
   * `probe` undefined: the handlers are not this host's (an engine over
   * SSH) and every version is ''.
   */
  constructor(
    private readonly emulated: readonly EmulatedPlatform[],
    private readonly probe: VersionProbe | undefined,
    private readonly log?: Logger,
    private readonly timeoutMs = VERSION_PROBE_TIMEOUT_MS,
  ) {}

  /** The version of the handler that emulates `platform`, or ''. Never rejects. */
  versionFor(platform: Platform): Promise<string> {
    const entry = this.emulated.find((e) => platformsEqual(e.platform, platform));
    if (!entry?.interpreter || !this.probe) return Promise.resolve('');
    const { handler, interpreter } = entry;
    let answer = this.asked.get(handler);
    if (!answer) {
      answer = this.ask(interpreter, handler, formatPlatform(platform));
      this.asked.set(handler, answer);
    }
    return answer;
  }

  private async ask(interpreter: string, handler: string, platform: string): Promise<string> {
    const probe = this.probe as VersionProbe;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
    });
    try {
      const output = await Promise.race([probe(interpreter, handler), deadline]);
      const version = parseQemuVersion(output);
      if (!version)
        this.log?.warn(
          { handler, interpreter, output: output.slice(0, 200) },
          'QEMU handler printed no version; provenance leaves it out',
        );
      else this.log?.info({ handler, platform, version }, 'QEMU handler version');
      return version;
    } catch (err) {
      this.log?.warn(
        { handler, interpreter, err: (err as Error).message },
        'cannot ask the QEMU handler its version; provenance leaves it out',
      );
      return '';
    } finally {
      clearTimeout(timer);
    }
  }
}
