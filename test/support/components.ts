/**
 * Real components the suites need. A missing one fails the suite with the
 * component's name and the command that provides it — never a silent skip.
 */
import { execFile } from 'node:child_process';
import { access, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export const PROVISION = 'bash scripts/test-env.sh';

export class MissingComponentError extends Error {
  constructor(component: string, detail: string, howToStart = PROVISION) {
    super(`${component} is not available (${detail}); start it with: ${howToStart}`);
    this.name = 'MissingComponentError';
  }
}

/** Path of an executable on PATH, or a MissingComponentError naming its package. */
export async function requireCommand(command: string, debianPackage: string): Promise<string> {
  try {
    const { stdout } = await exec('sh', ['-c', `command -v ${command}`]);
    return stdout.trim();
  } catch {
    throw new MissingComponentError(`${command} (Debian package ${debianPackage})`, 'not on PATH');
  }
}

export const SSHD = '/usr/sbin/sshd';

/** OpenSSH's server and ssh-keygen, for tests that run a real sshd on loopback. */
export async function requireSshd(): Promise<{ sshd: string; sshKeygen: string }> {
  try {
    await access(SSHD);
  } catch {
    throw new MissingComponentError(
      `sshd (Debian package openssh-server)`,
      `${SSHD} does not exist`,
    );
  }
  const sshKeygen = await requireCommand('ssh-keygen', 'openssh-client');
  return { sshd: SSHD, sshKeygen };
}

export const DOCKER_SOCKET = '/var/run/docker.sock';

/** The Docker engine answers on its socket. */
export async function requireEngine(): Promise<void> {
  try {
    await access(DOCKER_SOCKET);
    const { stdout } = await exec('curl', [
      '-sf',
      '--max-time',
      '5',
      '--unix-socket',
      DOCKER_SOCKET,
      'http://localhost/_ping',
    ]);
    if (stdout.trim() !== 'OK') throw new Error(`ping answered "${stdout.trim()}"`);
  } catch (err) {
    throw new MissingComponentError(
      `Docker engine at ${DOCKER_SOCKET}`,
      (err as Error).message.split('\n')[0] ?? 'no answer',
      `${PROVISION} (starts dockerd --bridge=none --iptables=false --ip-forward=false)`,
    );
  }
}

/** A QEMU binfmt handler is registered, enabled and has the F (fix binary) flag. */
export async function requireQemu(handler: string): Promise<void> {
  const file = `/proc/sys/fs/binfmt_misc/${handler}`;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new MissingComponentError(`QEMU binfmt handler ${handler}`, `${file} does not exist`);
  }
  if (!text.startsWith('enabled')) {
    throw new MissingComponentError(`QEMU binfmt handler ${handler}`, 'registered but disabled');
  }
  if (!/^flags: .*F/m.test(text)) {
    throw new MissingComponentError(
      `QEMU binfmt handler ${handler}`,
      'registered without the F flag',
    );
  }
}

export const BUSYBOX_DIR = process.env.BRAID_BUSYBOX_DIR ?? '/var/lib/braid-test-env/busybox';

/** Debian busybox-static binary for a Debian architecture (amd64, arm64, armhf, ppc64el, s390x). */
export async function requireBusybox(debianArch: string): Promise<string> {
  const file = `${BUSYBOX_DIR}/${debianArch}/busybox`;
  try {
    await access(file);
  } catch {
    throw new MissingComponentError(`busybox-static:${debianArch}`, `${file} does not exist`);
  }
  return file;
}
