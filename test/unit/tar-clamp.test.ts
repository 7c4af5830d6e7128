import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { extract, pack, type Header } from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clampTarTimes, type ClampStats } from '../../src/oci/tar-clamp.js';
import { TarFormatError } from '../../src/oci/tar-headers.js';

const EPOCH = 1_700_000_000;
const BEFORE = new Date((EPOCH - 86_400) * 1000);
const AFTER = new Date((EPOCH + 86_400) * 1000);

/** Runs `tar` through the clamp, in chunks of `chunkBytes` to cross every boundary. */
async function clamp(tar: Buffer, chunkBytes = 97, stats?: ClampStats): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for (let at = 0; at < tar.length; at += chunkBytes)
    chunks.push(tar.subarray(at, at + chunkBytes));
  const out: Buffer[] = [];
  for await (const chunk of Readable.from(chunks).pipe(clampTarTimes(EPOCH, stats)))
    out.push(chunk as Buffer);
  return Buffer.concat(out);
}

interface Seen {
  name: string;
  type: string;
  mtime: number;
  mode: number;
  body: string;
  pax: Record<string, string>;
}

/** Every entry as tar-stream reads it (it checks each header's checksum). */
async function entries(tar: Buffer): Promise<Seen[]> {
  const seen: Seen[] = [];
  const reader = extract();
  Readable.from([tar]).pipe(reader);
  for await (const entry of reader) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry as unknown as AsyncIterable<Buffer>) chunks.push(chunk);
    const h = entry.header;
    seen.push({
      name: h.name,
      type: h.type ?? 'file',
      mtime: Math.floor((h.mtime?.getTime() ?? 0) / 1000),
      mode: h.mode ?? 0,
      body: Buffer.concat(chunks).toString('utf8'),
      pax: (h.pax ?? {}) as Record<string, string>,
    });
  }
  return seen;
}

async function packed(list: Array<Partial<Header> & { name: string; body?: string }>) {
  const tar = pack();
  const out: Buffer[] = [];
  tar.on('data', (chunk: unknown) => out.push(chunk as Buffer));
  const ended = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  for (const { body, ...header } of list) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      if (body === undefined) tar.entry(header, done);
      else tar.entry(header, Buffer.from(body), done);
    });
  }
  tar.finalize();
  await ended;
  return Buffer.concat(out);
}

describe('clampTarTimes', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-clamp-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('moves later mtimes back to the epoch and leaves earlier ones, names, modes and contents alone', async () => {
    const tar = await packed([
      { name: 'old.txt', mtime: BEFORE, mode: 0o600, body: 'old' },
      { name: 'new.txt', mtime: AFTER, mode: 0o755, body: 'new' },
      { name: 'dir/', type: 'directory', mtime: AFTER, mode: 0o750 },
      { name: 'link', type: 'symlink', linkname: 'new.txt', mtime: AFTER },
    ]);
    const stats = { clamped: 0 };
    const out = await clamp(tar, 97, stats);
    expect(out.length).toBe(tar.length);
    const seen = await entries(out);
    expect(seen.map(({ name, mtime, mode, body }) => [name, mtime, mode, body])).toEqual([
      ['old.txt', EPOCH - 86_400, 0o600, 'old'],
      ['new.txt', EPOCH, 0o755, 'new'],
      ['dir/', EPOCH, 0o750, ''],
      ['link', EPOCH, 0o644, ''],
    ]);
    expect(stats.clamped).toBe(3);
  });

  it('gives back the very same bytes when nothing is later than the epoch', async () => {
    const tar = await packed([
      { name: 'a', mtime: BEFORE, body: 'x'.repeat(1000) },
      { name: 'b/', type: 'directory', mtime: new Date(EPOCH * 1000) },
    ]);
    const out = await clamp(tar, 7);
    expect(out.equals(tar)).toBe(true);
  });

  it('clamps pax times (GNU tar --format=posix writes sub-second ones) and keeps long names', async () => {
    const long = `${'deep/'.repeat(30)}file-with-a-name-longer-than-ustar-allows.txt`;
    await mkdir(join(dir, 'src', ...long.split('/').slice(0, -1)), { recursive: true });
    await writeFile(join(dir, 'src', long), 'body');
    await writeFile(join(dir, 'src', 'early'), 'early');
    await utimes(
      join(dir, 'src', long),
      AFTER.getTime() / 1000 + 0.25,
      AFTER.getTime() / 1000 + 0.5,
    );
    await utimes(join(dir, 'src', 'early'), BEFORE, BEFORE);
    const tar = execFileSync('tar', [
      '--format=posix',
      '--sort=name',
      '-C',
      join(dir, 'src'),
      '-cf',
      '-',
      long,
      'early',
    ]);
    const out = await clamp(tar, 300);
    const seen = await entries(out);
    const file = seen.find((e) => e.name === long);
    expect(file?.body).toBe('body');
    expect(file?.mtime).toBe(EPOCH);
    expect(Number(file?.pax.mtime)).toBe(EPOCH);
    expect(Number(file?.pax.atime)).toBe(EPOCH);
    expect(seen.find((e) => e.name === 'early')?.mtime).toBe(EPOCH - 86_400);
    // GNU tar itself reads the result: checksums and pax lengths are right.
    await writeFile(join(dir, 'out.tar'), out);
    const listing = execFileSync('tar', ['--full-time', '-tvf', join(dir, 'out.tar')], {
      encoding: 'utf8',
      env: { ...process.env, TZ: 'UTC' },
    });
    expect(listing).toContain(`${new Date(EPOCH * 1000).toISOString().slice(0, 10)} `);
    expect(listing).not.toContain(AFTER.toISOString().slice(0, 10));
  });

  it('clamps old GNU headers (tar --format=oldgnu)', async () => {
    await writeFile(join(dir, 'f'), 'f');
    await utimes(join(dir, 'f'), AFTER, AFTER);
    const tar = execFileSync('tar', ['--format=oldgnu', '-C', dir, '-cf', '-', 'f']);
    const out = await clamp(tar);
    expect((await entries(out))[0]?.mtime).toBe(EPOCH);
  });

  it('refuses a corrupt header with a TarFormatError instead of passing it on', async () => {
    const tar = await packed([{ name: 'a', mtime: AFTER, body: 'a' }]);
    tar[0] = 0x41; // the name changes, the checksum does not
    await expect(clamp(tar)).rejects.toBeInstanceOf(TarFormatError);
  });

  it('refuses an epoch that is not a non-negative integer', () => {
    expect(() => clampTarTimes(-1)).toThrow(/not a non-negative integer/);
    expect(() => clampTarTimes(1.5)).toThrow(/not a non-negative integer/);
  });
});
