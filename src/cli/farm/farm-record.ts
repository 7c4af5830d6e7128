/**
 * The hosts `braid farm add` installed, kept in a small JSON file on the
 * machine that ran it (default `DATA/farm.json`): what `ls` joins with the
 * coordinator's view and what `remove` needs to undo an install. It holds
 * no secret: the join token stays on the host, in the agent's env file.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { BraidError } from '../../errors.js';

const hostSchema = z.object({
  name: z.string(),
  /** `ssh://user@host:port`. */
  url: z.string(),
  prefix: z.string(),
  service: z.enum(['systemd', 'supervised']),
  coordinator: z.string(),
  labels: z.array(z.string()).default([]),
  sshKey: z.array(z.string()).default([]),
  sshKnownHosts: z.string().optional(),
  /** The join token braid made for this agent (revoked by `remove`), or the one it was given. */
  joinToken: z
    .object({
      id: z.string(),
      name: z.string(),
      dataDir: z.string(),
      createdByBraid: z.boolean(),
    })
    .optional(),
  bundleSha256: z.string(),
  addedAt: z.string(),
  updatedAt: z.string(),
});

const fileSchema = z.object({
  version: z.literal(1),
  hosts: z.array(hostSchema),
});

export type FarmHost = z.infer<typeof hostSchema>;

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
    let parsed;
    try {
      parsed = fileSchema.safeParse(JSON.parse(text));
    } catch (err) {
      throw new BraidError('failed_precondition', `the farm record ${file} is not JSON`, {
        cause: err,
      });
    }
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new BraidError(
        'failed_precondition',
        `the farm record ${file} is not braid's: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`.trim(),
      );
    }
    return new FarmRecord(file, parsed.data.hosts);
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
