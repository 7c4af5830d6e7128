/**
 * A farm host over SSH: POSIX sh scripts run on it, and files written to it
 * through `cat >` (sshd needs no SFTP subsystem). The host key is checked
 * against known_hosts by src/ssh; an unknown or changed key ends the call
 * before anything runs. Scripts get their values through shellQuote only.
 */
import { createHash } from 'node:crypto';
import type { ClientChannel } from 'ssh2';
import type { Logger } from '../../log.js';
import { SshConnection } from '../../ssh/connection.js';
import { describeIdentity, loadIdentities } from '../../ssh/identities.js';
import { knownHostsFiles as knownHostsList } from '../../ssh/known-hosts.js';
import { runRemoteCommand, type RemoteCommandResult } from '../../ssh/remote-command.js';
import type { SshTarget } from '../../ssh/ssh-url.js';
import { sshSettingRefusal } from '../user-input.js';
import { FarmError } from './errors.js';
import type { FarmSshConfig } from './settings.js';

/** `'text'` for sh, whatever the text holds. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

export interface RemoteHostOptions {
  ssh: FarmSshConfig;
  env: NodeJS.ProcessEnv;
  log?: Logger | undefined;
}

export class RemoteHost {
  /** Prefix of commands that must run as root (`sudo -n ` for another user). */
  private rootPrefix = '';

  private constructor(
    readonly target: SshTarget,
    private readonly connection: SshConnection,
    private readonly waitMs: number,
  ) {}

  /**
   * Logs in, or throws the SshError that says why not (host key, login,
   * network). A key or known_hosts file that cannot be used (named by
   * --ssh-key and --ssh-known-hosts, or their defaults) is bad usage instead.
   */
  static async connect(target: SshTarget, options: RemoteHostOptions): Promise<RemoteHost> {
    try {
      return await RemoteHost.login(target, options);
    } catch (err) {
      throw sshSettingRefusal(err);
    }
  }

  private static async login(target: SshTarget, options: RemoteHostOptions): Promise<RemoteHost> {
    const { ssh, env, log } = options;
    const identities = loadIdentities(
      {
        keyFiles: ssh.sshKey,
        passphrase: ssh.sshKeyPassphrase,
        agentSocket: env.SSH_AUTH_SOCK,
        homeDir: env.HOME,
      },
      log,
    );
    const knownHostsFiles = knownHostsList(ssh.sshKnownHosts, env.HOME);
    log?.debug(
      { ssh: target.display, identities: identities.map(describeIdentity), knownHostsFiles },
      'farm host',
    );
    const connection = new SshConnection(target, {
      identities,
      knownHostsFiles,
      readyTimeoutMs: ssh.sshConnectTimeoutMs,
      keepaliveIntervalMs: 15_000,
      keepaliveCountMax: 3,
      log,
    });
    const host = new RemoteHost(target, connection, ssh.sshConnectTimeoutMs);
    try {
      await connection.client(ssh.sshConnectTimeoutMs);
    } catch (err) {
      await connection.close();
      throw err;
    }
    return host;
  }

  get display(): string {
    return this.target.display;
  }

  /** Later `asRoot` scripts run through `sudo -n` (the login user is not root). */
  useSudo(): void {
    this.rootPrefix = 'sudo -n ';
  }

  /** Runs `script` with sh; never throws on a non-zero exit. */
  async run(script: string, timeoutMs = 60_000, asRoot = false): Promise<RemoteCommandResult> {
    const command = `${asRoot ? this.rootPrefix : ''}sh -c ${shellQuote(script)}`;
    return runRemoteCommand(this.connection, command, { waitMs: this.waitMs, timeoutMs });
  }

  /** Runs `script`; a non-zero exit is a FarmError naming `what` and the script's last stderr line. */
  async mustRun(what: string, script: string, timeoutMs = 60_000, asRoot = false): Promise<string> {
    const result = await this.run(script, timeoutMs, asRoot);
    if (result.code !== 0) {
      const why = lastLine(result.stderr) || lastLine(result.stdout) || `exit ${result.code}`;
      throw new FarmError('failed_precondition', this.display, `${what} failed: ${why}`);
    }
    return result.stdout;
  }

  /**
   * Writes `data` to `path` (mode 0600, through a temp file and rename) and
   * returns its sha256 as computed here; the caller checks it on the far side.
   */
  async upload(path: string, data: Buffer, asRoot = false): Promise<string> {
    const sha256 = createHash('sha256').update(data).digest('hex');
    const temp = `${path}.upload`;
    const script = `umask 077 && cat > ${shellQuote(temp)} && mv -f ${shellQuote(temp)} ${shellQuote(path)}`;
    const command = `${asRoot ? this.rootPrefix : ''}sh -c ${shellQuote(script)}`;
    const client = await this.connection.client(this.waitMs);
    await new Promise<void>((resolve, reject) => {
      client.exec(command, (err, channel: ClientChannel) => {
        if (err) {
          reject(
            new FarmError('unavailable', this.display, `cannot write ${path}: ${err.message}`),
          );
          return;
        }
        let code: number | null = null;
        let stderr = '';
        channel.stderr.on('data', (chunk: Buffer) => {
          if (stderr.length < 4096) stderr += chunk.toString('utf8');
        });
        // The channel closes only once its output is read to the end.
        channel.resume();
        channel.on('exit', (status: number | null) => (code = status));
        channel.on('close', () => {
          if (code === 0) resolve();
          else {
            const why = lastLine(stderr) || `exit ${code}`;
            reject(
              new FarmError('failed_precondition', this.display, `cannot write ${path}: ${why}`),
            );
          }
        });
        channel.end(data);
      });
    });
    return sha256;
  }

  async close(): Promise<void> {
    await this.connection.close();
  }
}

export function lastLine(text: string): string {
  const lines = text.split('\n').map((line) => line.trim());
  return lines.filter(Boolean).at(-1) ?? '';
}
