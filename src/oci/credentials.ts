/**
 * Registry credentials the way the docker CLI keeps them: `config.json`
 * (`$DOCKER_CONFIG` or `~/.docker`) with `auths`, `credHelpers` and
 * `credsStore`, the latter two through `docker-credential-*` helpers.
 */
import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BraidError, UsageError } from '../errors.js';

export type Credentials =
  { kind: 'basic'; username: string; password: string } | { kind: 'identity-token'; token: string };

/** Where a registry client gets credentials for a registry host. */
export interface CredentialSource {
  credentialsFor(host: string): Promise<Credentials | undefined>;
}

export const NO_CREDENTIALS: CredentialSource = { credentialsFor: async () => undefined };

interface DockerConfigFile {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string }
  >;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** docker.io credentials live under this key, as the docker CLI writes them. */
const DOCKER_HUB_KEY = 'https://index.docker.io/v1/';

/** `https://host:5000/v1/` -> `host:5000`; Docker Hub's aliases -> `docker.io`. */
export function configKeyHost(key: string): string {
  const host = key
    .replace(/^[a-z]+:\/\//i, '')
    .replace(/\/.*$/, '')
    .toLowerCase();
  return ['index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com'].includes(host)
    ? 'docker.io'
    : host;
}

export type HelperRunner = (helper: string, input: string) => Promise<string>;

const runHelper: HelperRunner = (helper, input) =>
  new Promise((resolve, reject) => {
    const child = execFile(
      `docker-credential-${helper}`,
      ['get'],
      { timeout: 10_000, maxBuffer: 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) reject(Object.assign(err, { stdout, stderr }));
        else resolve(stdout);
      },
    );
    child.stdin?.end(input);
  });

export interface DockerConfigOptions {
  env: Readonly<Record<string, string | undefined>>;
  runHelper?: HelperRunner;
}

export class DockerConfigCredentials implements CredentialSource {
  private config: Promise<DockerConfigFile> | undefined;
  /** mtime and size of the file `config` was read from ('absent' when there was none). */
  private configVersion = '';
  private readonly runHelper: HelperRunner;

  constructor(private readonly options: DockerConfigOptions) {
    this.runHelper = options.runHelper ?? runHelper;
  }

  get configPath(): string {
    const dir = this.options.env.DOCKER_CONFIG ?? join(this.options.env.HOME ?? '/root', '.docker');
    return join(dir, 'config.json');
  }

  /**
   * The config file, read again when it changed (a `docker login` after the
   * agent or coordinator started counts at the next pull or push).
   */
  private async load(): Promise<DockerConfigFile> {
    const version = await stat(this.configPath).then(
      (info) => `${Math.trunc(info.mtimeMs)}:${info.size}`,
      () => 'absent',
    );
    if (this.config === undefined || this.configVersion !== version) {
      this.configVersion = version;
      this.config = this.read();
    }
    return this.config;
  }

  private read(): Promise<DockerConfigFile> {
    return readFile(this.configPath, 'utf8').then(
      (text) => {
        try {
          return JSON.parse(text) as DockerConfigFile;
        } catch (err) {
          throw new UsageError(`${this.configPath} is not valid JSON`, {
            cause: err,
          });
        }
      },
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return {};
        throw new BraidError('failed_precondition', `cannot read ${this.configPath}: ${err.code}`, {
          cause: err,
        });
      },
    );
  }

  async credentialsFor(host: string): Promise<Credentials | undefined> {
    const config = await this.load();
    const wanted = configKeyHost(host);
    const helper =
      Object.entries(config.credHelpers ?? {}).find(
        ([key]) => configKeyHost(key) === wanted,
      )?.[1] ?? config.credsStore;
    if (helper) {
      const fromHelper = await this.fromHelper(helper, wanted);
      if (fromHelper) return fromHelper;
    }
    const entry = Object.entries(config.auths ?? {}).find(
      ([key]) => configKeyHost(key) === wanted,
    )?.[1];
    if (!entry) return undefined;
    if (entry.identitytoken) return { kind: 'identity-token', token: entry.identitytoken };
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) {
        throw new UsageError(
          `${this.configPath}: auths["${wanted}"].auth is not base64 of user:password`,
        );
      }
      return {
        kind: 'basic',
        username: decoded.slice(0, colon),
        password: decoded.slice(colon + 1),
      };
    }
    if (entry.username && entry.password) {
      return { kind: 'basic', username: entry.username, password: entry.password };
    }
    return undefined;
  }

  private async fromHelper(helper: string, host: string): Promise<Credentials | undefined> {
    const serverUrl = host === 'docker.io' ? DOCKER_HUB_KEY : host;
    let stdout: string;
    try {
      stdout = await this.runHelper(helper, serverUrl);
    } catch (err) {
      const text = `${(err as { stdout?: string }).stdout ?? ''}${(err as { stderr?: string }).stderr ?? ''}`;
      if (/credentials not found/i.test(text)) return undefined;
      throw new BraidError(
        'failed_precondition',
        `credential helper docker-credential-${helper} failed for ${host}: ${(text || (err as Error).message).trim().split('\n')[0]}`,
        { cause: err },
      );
    }
    let parsed: { Username?: string; Secret?: string };
    try {
      parsed = JSON.parse(stdout) as { Username?: string; Secret?: string };
    } catch (err) {
      throw new BraidError(
        'failed_precondition',
        `credential helper docker-credential-${helper} printed no JSON for ${host}`,
        { cause: err },
      );
    }
    if (!parsed.Secret) return undefined;
    if (parsed.Username === '<token>') return { kind: 'identity-token', token: parsed.Secret };
    return { kind: 'basic', username: parsed.Username ?? '', password: parsed.Secret };
  }
}

/** Credentials given directly (flags, tests), by registry host. */
export class StaticCredentials implements CredentialSource {
  constructor(private readonly byHost: Record<string, Credentials>) {}
  async credentialsFor(host: string): Promise<Credentials | undefined> {
    return this.byHost[configKeyHost(host)];
  }
}
