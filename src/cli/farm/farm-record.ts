/**
 * The hosts `braid farm add` installed, kept in a small JSON file on the
 * machine that ran it (default `DATA/farm.json`): what `ls` joins with the
 * coordinator's view and what `remove` needs to undo an install. It holds
 * no secret: the join token stays on the host, in the agent's env file.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BraidError } from '../../errors.js';
import {
  array,
  boolean,
  Invalid,
  literal,
  object,
  oneOf,
  optional,
  string,
  withDefault,
  type Infer,
} from '../../schema.js';

const hostSchema = object({
  name: string(),
  /** `ssh://user@host:port`. */
  url: string(),
  prefix: string(),
  service: oneOf(['systemd', 'supervised']),
  coordinator: string(),
  labels: withDefault(array(string()), []),
  sshKey: withDefault(array(string()), []),
  sshKnownHosts: optional(string()),
  /** The join token braid made for this agent (revoked by `remove`), or the one it was given. */
  joinToken: optional(
    object({
      id: string(),
      name: string(),
      dataDir: string(),
      createdByBraid: boolean(),
    }),
  ),
  bundleSha256: string(),
  addedAt: string(),
  updatedAt: string(),
});

const fileSchema = object({
  version: literal(1),
  hosts: array(hostSchema),
});

export type FarmHost = Infer<typeof hostSchema>;

export class FarmRecord {
  private constructor(
    readonly file: string,
    private hosts: FarmHost[],
  ) {}

  static async open(file: string): Promise<FarmRecord> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new FarmRecord(file, []);
      throw new BraidError('failed_precondition', `cannot read the farm record ${file}`, {
        cause: err,
      });
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new BraidError('failed_precondition', `the farm record ${file} is not JSON`, {
        cause: err,
      });
    }
    try {
      return new FarmRecord(file, fileSchema(doc).hosts);
    } catch (err) {
      if (!(err instanceof Invalid)) throw err;
      throw new BraidError(
        'failed_precondition',
        `the farm record ${file} is not braid's: ${err.describe()}`,
      );
    }
  }

  list(): readonly FarmHost[] {
    return this.hosts;
  }

  get(name: string): FarmHost | undefined {
    return this.hosts.find((host) => host.name === name);
  }

  /** The host installed at this URL and prefix, under any name. */
  at(url: string, prefix: string): FarmHost | undefined {
    return this.hosts.find((host) => host.url === url && host.prefix === prefix);
  }

  async put(host: FarmHost): Promise<void> {
    this.hosts = [...this.hosts.filter((h) => h.name !== host.name), host].sort((a, b) =>
      a.name.localeCompare(b.name),
    );
    await this.save();
  }

  async delete(name: string): Promise<void> {
    this.hosts = this.hosts.filter((host) => host.name !== name);
    await this.save();
  }

  /** Written whole to a temp file, then renamed: a crash leaves the old or the new record. */
  private async save(): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    const next = `${this.file}.${process.pid}.tmp`;
    const body = { version: 1, hosts: this.hosts };
    await writeFile(next, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
    await rename(next, this.file);
  }
}
