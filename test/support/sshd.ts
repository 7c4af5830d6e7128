/**
 * A real OpenSSH sshd on a free 127.0.0.1 port, with a host key and a
 * client key the test made (ssh-keygen) and everything in a temp dir. The
 * login user is root (the tests run as root). Stopped by pid, with every
 * session process it forked.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireSshd } from './components.js';
import { run, startProcess, type Started } from './process.js';
import { freePort } from './registry.js';

export interface TestSshd {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** `ssh://root@127.0.0.1:PORT` */
  readonly url: string;
  readonly dir: string;
  /** The client's private key (ed25519, no passphrase), listed in authorized_keys. */
  readonly clientKey: string;
  /** A private key sshd does not accept. */
  readonly strangerKey: string;
  /** `[127.0.0.1]:PORT ssh-ed25519 AAAA...`: the host key as a known_hosts line. */
  readonly hostKeyLine: string;
  /** The host key's `SHA256:...` as `ssh-keygen -lf` prints it. */
  readonly hostFingerprint: string;
  /** A known_hosts file holding hostKeyLine. */
  readonly knownHosts: string;
  /** sshd's log so far (-e: on stderr), across restarts. */
  log(): string;
  /** Ends every SSH session (kills the processes sshd forked for them, by pid); the listener stays. */
  dropSessions(): Promise<number>;
  /** Stops sshd and its sessions. */
  halt(): Promise<void>;
  /** Starts sshd again on the same port with the same keys. */
  resume(): Promise<void>;
  stop(): Promise<void>;
}

const READY = /Server listening on 127\.0\.0\.1 port (\d+)/;

export async function startSshd(): Promise<TestSshd> {
  const { sshd, sshKeygen } = await requireSshd();
  // sshd's privilege separation directory; Debian's unit creates it at boot.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const dir = await mkdtemp(join(tmpdir(), 'braid-sshd-'));
  const keygen = async (file: string, comment: string): Promise<void> => {
    const made = await run(sshKeygen, ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
    if (made.code !== 0) throw new Error(`ssh-keygen -f ${file}: ${made.stderr}`);
  };
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const clientKey = join(dir, 'client_ed25519');
  const strangerKey = join(dir, 'stranger_ed25519');
  await keygen(hostKey, 'braid-test-host');
  await keygen(clientKey, 'braid-test-client');
  await keygen(strangerKey, 'braid-test-stranger');
  await writeFile(join(dir, 'authorized_keys'), await readFile(`${clientKey}.pub`), {
    mode: 0o600,
  });
  const config = join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'StrictModes no',
      'UsePAM no',
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'AllowStreamLocalForwarding yes',
      // OpenSSH applies AllowTcpForwarding to unix-socket forwarding too: `no` would refuse it.
      'AllowTcpForwarding local',
      'X11Forwarding no',
      'PermitTTY no',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  );
  const fingerprint = await run(sshKeygen, ['-l', '-f', `${hostKey}.pub`]);
  const hostFingerprint = /SHA256:[A-Za-z0-9+/]+/.exec(fingerprint.stdout)?.[0];
  if (!hostFingerprint)
    throw new Error(`ssh-keygen -lf: ${fingerprint.stdout}${fingerprint.stderr}`);

  let port = 0;
  let proc: Started | undefined;
  let previousLogs = '';
  const launch = async (wanted: number): Promise<boolean> => {
    const started = startProcess(sshd, ['-D', '-e', '-f', config, '-p', String(wanted)]);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (READY.test(started.stderr())) {
        proc = started;
        port = wanted;
        return true;
      }
      const exited = await Promise.race([
        started.exited.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 25)),
      ]);
      if (exited) {
        previousLogs += started.stderr();
        // The free port was taken in between: another one will do (only on first start).
        if (/Address already in use/.test(started.stderr())) return false;
        throw new Error(`sshd exited: ${started.stderr().slice(-2000)}`);
      }
    }
    await started.stop('SIGKILL');
    throw new Error(`sshd did not listen within 15000 ms: ${started.stderr().slice(-2000)}`);
  };
  for (let attempt = 0; attempt < 5 && proc === undefined; attempt++)
    await launch(await freePort());
  if (proc === undefined) throw new Error('sshd found no free port in 5 attempts');

  const publicKey = (await readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/);
  const hostKeyLine = `[127.0.0.1]:${port} ${publicKey[0]} ${publicKey[1]}`;
  const knownHosts = join(dir, 'known_hosts');
  await writeFile(knownHosts, `${hostKeyLine}\n`);

  /** The pids sshd forked, deepest first. */
  const descendants = async (pid: number): Promise<number[]> => {
    const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
    const children = text.split(/\s+/).filter(Boolean).map(Number);
    const all: number[] = [];
    for (const child of children) all.push(...(await descendants(child)), child);
    return all;
  };
  const killAll = (pids: number[]): void => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  };

  const halt = async (): Promise<void> => {
    const current = proc;
    if (current === undefined) return;
    proc = undefined;
    const sessions = await descendants(current.pid);
    await current.stop('SIGTERM', 5_000);
    killAll(sessions);
    previousLogs += current.stderr();
  };

  return {
    host: '127.0.0.1',
    get port() {
      return port;
    },
    url: `ssh://root@127.0.0.1:${port}`,
    dir,
    clientKey,
    strangerKey,
    hostKeyLine,
    hostFingerprint,
    knownHosts,
    log: () => previousLogs + (proc?.stderr() ?? ''),
    async dropSessions() {
      if (proc === undefined) return 0;
      const sessions = await descendants(proc.pid);
      killAll(sessions);
      return sessions.length;
    },
    halt,
    async resume() {
      if (proc !== undefined) return;
      if (!(await launch(port))) throw new Error(`sshd could not listen on ${port} again`);
    },
    async stop() {
      await halt();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
