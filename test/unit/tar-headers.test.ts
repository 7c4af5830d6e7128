import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile, link } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, gzipSync } from 'node:zlib';
import { pack, type Header } from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  MAX_EXTENSION_BYTES,
  TarFormatError,
  TarHeaderParser,
  TarHeaderSink,
  type TarEntry,
} from '../../src/oci/tar-headers.js';

const HEAD_BYTES = 8;
const END_BLOCKS = Buffer.alloc(1024);

interface Parsed {
  entries: TarEntry[];
  /** First HEAD_BYTES of every regular file, by name. */
  heads: Record<string, string>;
}

/** Parses `chunks` in order, asking for the head of every regular file. */
function parse(chunks: readonly Buffer[]): Parsed {
  const parsed: Parsed = { entries: [], heads: {} };
  const parser = new TarHeaderParser(HEAD_BYTES, (entry) => {
    parsed.entries.push(entry);
    if (entry.type !== 'file') return undefined;
    return (head) => {
      parsed.heads[entry.name] = head.toString('latin1');
    };
  });
  for (const chunk of chunks) parser.write(chunk);
  parser.end();
  return parsed;
}

/** An archive written by tar-stream, the way braid's own test layers are. */
type PackedEntry = { header: Partial<Header> & Pick<Header, 'name'>; body?: string };

async function packed(entries: readonly PackedEntry[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  for (const { header, body } of entries) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      const withMode = { ...header, mode: header.mode ?? 0o644 };
      if (body === undefined) tar.entry(withMode, done);
      else tar.entry(withMode, Buffer.from(body), done);
    });
  }
  tar.finalize();
  await ended;
  return Buffer.concat(chunks);
}

interface RawHeader {
  name: string;
  typeflag?: string;
  mode?: number;
  /** A number, written in octal, or the 12 raw bytes of the field. */
  size?: number | Buffer;
  linkname?: string;
  prefix?: string;
  magic?: 'ustar' | 'gnu' | 'v7';
}

/** One 512-byte header block, built field by field. */
function rawHeader(header: RawHeader): Buffer {
  const block = Buffer.alloc(512);
  block.write(header.name, 0, 100, 'utf8');
  block.write(octal(header.mode ?? 0o644, 8), 100, 'latin1');
  block.write(octal(0, 8), 108, 'latin1');
  block.write(octal(0, 8), 116, 'latin1');
  const size = header.size ?? 0;
  if (typeof size === 'number') block.write(octal(size, 12), 124, 'latin1');
  else size.copy(block, 124);
  block.write(octal(0, 12), 136, 'latin1');
  block.write(header.typeflag ?? '0', 156, 'latin1');
  block.write(header.linkname ?? '', 157, 100, 'utf8');
  const magic = header.magic ?? 'ustar';
  if (magic === 'ustar') block.write('ustar\x0000', 257, 'latin1');
  if (magic === 'gnu') block.write('ustar  \x00', 257, 'latin1');
  block.write(header.prefix ?? '', 345, 155, 'utf8');
  return withChecksum(block);
}

function withChecksum(block: Buffer): Buffer {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\x00 `, 148, 'latin1');
  return block;
}

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\x00`;
}

/** `body` followed by zeros up to the next block. */
function content(body: string): Buffer {
  const bytes = Buffer.from(body);
  return Buffer.concat([bytes, Buffer.alloc((512 - (bytes.length % 512)) % 512)]);
}

function paxHeader(typeflag: 'x' | 'g', records: Record<string, string>): Buffer {
  const body = Object.entries(records)
    .map(([key, value]) => {
      const text = ` ${key}=${value}\n`;
      let length = text.length + 1;
      while (`${length}${text}`.length !== length) length++;
      return `${length}${text}`;
    })
    .join('');
  return extendedHeader(typeflag, body);
}

function extendedHeader(typeflag: string, body: string): Buffer {
  return Buffer.concat([
    rawHeader({ name: 'PaxHeader', typeflag, size: Buffer.byteLength(body) }),
    content(body),
  ]);
}

const LONG_DIR = `usr/${'d'.repeat(60)}/${'e'.repeat(60)}`;
const LONG_NAME = `${'n'.repeat(120)}`;

describe('TarHeaderParser', () => {
  it('reads names, types, modes, sizes and link targets of a ustar archive', async () => {
    const archive = await packed([
      { header: { name: 'bin/', type: 'directory', mode: 0o755 } },
      { header: { name: 'bin/busybox', mode: 0o755 }, body: 'ELF-ish binary' },
      { header: { name: 'bin/sh', type: 'symlink', linkname: 'busybox' } },
      { header: { name: 'bin/ash', type: 'link', linkname: 'bin/busybox' } },
      { header: { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 } },
      { header: { name: 'run/fifo', type: 'fifo' } },
    ]);
    expect(parse([archive])).toEqual({
      entries: [
        { name: 'bin/', type: 'dir', mode: 0o755, size: 0, linkname: '' },
        { name: 'bin/busybox', type: 'file', mode: 0o755, size: 14, linkname: '' },
        { name: 'bin/sh', type: 'symlink', mode: 0o644, size: 0, linkname: 'busybox' },
        { name: 'bin/ash', type: 'link', mode: 0o644, size: 0, linkname: 'bin/busybox' },
        { name: 'dev/null', type: 'other', mode: 0o644, size: 0, linkname: '' },
        { name: 'run/fifo', type: 'other', mode: 0o644, size: 0, linkname: '' },
      ],
      heads: { 'bin/busybox': 'ELF-ish ' },
    });
  });

  it('joins the ustar prefix field to the name', async () => {
    const archive = await packed([{ header: { name: `${LONG_DIR}/tool` }, body: 'x' }]);
    expect(archive.toString('latin1', 345, 345 + 65)).toBe(`usr/${'d'.repeat(60)}\0`);
    expect(parse([archive]).entries.map((e) => e.name)).toEqual([`${LONG_DIR}/tool`]);
  });

  it('hands out whole heads of files shorter than the head, and none for empty files', async () => {
    const archive = await packed([
      { header: { name: 'short' }, body: 'abc' },
      { header: { name: 'empty' }, body: '' },
    ]);
    expect(parse([archive]).heads).toEqual({ short: 'abc' });
  });

  it('reads long names and link targets from pax headers', async () => {
    const archive = await packed([
      { header: { name: `bin/${LONG_NAME}`, mode: 0o755 }, body: 'long body' },
      { header: { name: 'bin/sh', type: 'symlink', linkname: `/opt/${LONG_NAME}` } },
    ]);
    expect(parse([archive]).entries).toEqual([
      { name: `bin/${LONG_NAME}`, type: 'file', mode: 0o755, size: 9, linkname: '' },
      { name: 'bin/sh', type: 'symlink', mode: 0o644, size: 0, linkname: `/opt/${LONG_NAME}` },
    ]);
  });

  it('takes the size from a pax header over the header field', () => {
    const archive = Buffer.concat([
      paxHeader('x', { size: '600' }),
      rawHeader({ name: 'big', size: 1 }),
      content('a'.repeat(600)),
      rawHeader({ name: 'after' }),
      END_BLOCKS,
    ]);
    expect(parse([archive]).entries.map((e) => [e.name, e.size])).toEqual([
      ['big', 600],
      ['after', 0],
    ]);
  });

  it('does not apply pax global headers to the entries after them, as Go does not', () => {
    const archive = Buffer.concat([
      paxHeader('g', { path: 'global-name', size: '0' }),
      rawHeader({ name: 'own-name', size: 3 }),
      content('abc'),
      END_BLOCKS,
    ]);
    expect(parse([archive]).entries).toEqual([
      { name: 'own-name', type: 'file', mode: 0o644, size: 3, linkname: '' },
    ]);
  });

  it('keeps the header name when a pax path is empty, and lets a GNU long name win over a pax path', () => {
    const longName = Buffer.from(`gnu-${LONG_NAME}\0`);
    const archive = Buffer.concat([
      paxHeader('x', { path: '' }),
      rawHeader({ name: 'header-name' }),
      paxHeader('x', { path: 'pax-name' }),
      rawHeader({ name: '././@LongLink', typeflag: 'L', size: longName.length, magic: 'gnu' }),
      content(longName.toString('latin1')),
      rawHeader({ name: 'short', magic: 'gnu' }),
      END_BLOCKS,
    ]);
    expect(parse([archive]).entries.map((e) => e.name)).toEqual([
      'header-name',
      `gnu-${LONG_NAME}`,
    ]);
  });

  it('reads base-256 (binary) size fields', () => {
    const size = Buffer.alloc(12);
    size[0] = 0x80;
    size.writeUInt16BE(700, 10);
    const archive = Buffer.concat([
      rawHeader({ name: 'binary-size', size }),
      content('b'.repeat(700)),
      rawHeader({ name: 'after' }),
      END_BLOCKS,
    ]);
    expect(parse([archive]).entries.map((e) => [e.name, e.size])).toEqual([
      ['binary-size', 700],
      ['after', 0],
    ]);
  });

  it('reads v7 headers and old-style directories named with a trailing slash', () => {
    const archive = Buffer.concat([
      rawHeader({ name: 'etc/', typeflag: '\0', magic: 'v7', prefix: 'ignored' }),
      rawHeader({ name: 'etc/motd', typeflag: '\0', magic: 'v7', size: 2 }),
      content('hi'),
      END_BLOCKS,
    ]);
    expect(parse([archive])).toEqual({
      entries: [
        { name: 'etc/', type: 'dir', mode: 0o644, size: 0, linkname: '' },
        { name: 'etc/motd', type: 'file', mode: 0o644, size: 2, linkname: '' },
      ],
      heads: { 'etc/motd': 'hi' },
    });
  });

  it('reads no content for links and directories whatever their size field says, as Go does', () => {
    // Read as content, the second header would vanish from the guard's view but not the runtime's.
    const archive = Buffer.concat([
      rawHeader({ name: 'bin/sh', typeflag: '2', linkname: 'busybox', size: 512 }),
      rawHeader({ name: 'bin/busybox', mode: 0o755, size: 4 }),
      content('\x7fELF'),
      rawHeader({ name: 'lib/', typeflag: '5', size: 512 }),
      rawHeader({ name: 'lib/after-dir' }),
      END_BLOCKS,
    ]);
    expect(parse([archive]).entries.map((e) => [e.name, e.size])).toEqual([
      ['bin/sh', 0],
      ['bin/busybox', 4],
      ['lib/', 0],
      ['lib/after-dir', 0],
    ]);
  });

  it('accepts a checksum computed over signed bytes', () => {
    const block = rawHeader({ name: 'caf\u00e9' });
    block.fill(0x20, 148, 156);
    let signed = 0;
    for (const byte of block) signed += byte < 0x80 ? byte : byte - 0x100;
    block.write(`${signed.toString(8).padStart(6, '0')}\x00 `, 148, 'latin1');
    expect(parse([block, END_BLOCKS]).entries.map((e) => e.name)).toEqual(['caf\u00e9']);
  });

  it('stops at the two zero blocks and ignores what follows them', () => {
    const archive = Buffer.concat([
      rawHeader({ name: 'inside' }),
      END_BLOCKS,
      rawHeader({ name: 'after-the-end' }),
      Buffer.from('not even a header'),
    ]);
    expect(parse([archive]).entries.map((e) => e.name)).toEqual(['inside']);
  });

  it.each([
    ['no zero blocks', Buffer.alloc(0)],
    ['one zero block', Buffer.alloc(512)],
  ])('accepts an archive that ends after its last entry with %s', (_how, ending) => {
    const archive = Buffer.concat([rawHeader({ name: 'a', size: 1 }), content('a'), ending]);
    expect(parse([archive]).entries.map((e) => e.name)).toEqual(['a']);
  });

  it('rejects a header after a single zero block, as Go does', () => {
    const archive = Buffer.concat([Buffer.alloc(512), rawHeader({ name: 'a' })]);
    expect(() => parse([archive])).toThrow(
      new TarFormatError('invalid tar header at byte 512: a zero block is followed by a header'),
    );
  });

  it('rejects a header whose checksum does not match, naming its offset', () => {
    const corrupt = rawHeader({ name: 'second' });
    corrupt[0] = 0x53; // 's' -> 'S' after the checksum was written
    const archive = Buffer.concat([rawHeader({ name: 'first', size: 1 }), content('1'), corrupt]);
    expect(() => parse([archive])).toThrow(
      'invalid tar header at byte 1024: checksum mismatch (a corrupt archive, or not a tar archive)',
    );
  });

  it('rejects bytes that are not a tar archive', () => {
    expect(() => parse([Buffer.from('x'.repeat(600))])).toThrow(TarFormatError);
  });

  it.each([
    ['a size that is not octal', rawHeader({ name: 'a', size: Buffer.from('12x4\0') })],
    ['a negative base-256 size', rawHeader({ name: 'a', size: Buffer.alloc(12, 0xff) })],
    ['a pax record longer than its header', extendedHeader('x', '99 path=a\n')],
    ['a pax record without its newline', extendedHeader('x', '9 path=ab')],
    ['a pax record with NUL in the path', paxHeader('x', { path: 'a\0b' })],
    ['a non-numeric pax size', paxHeader('x', { size: '12k' })],
    [
      'an extended header over the limit',
      rawHeader({ name: 'PaxHeader', typeflag: 'x', size: MAX_EXTENSION_BYTES + 1 }),
    ],
  ])('rejects %s', (_what, header) => {
    expect(() => parse([header, rawHeader({ name: 'next' }), END_BLOCKS])).toThrow(
      /^invalid tar header at byte 0: /,
    );
  });

  describe('with a truncated archive', () => {
    const entry = Buffer.concat([rawHeader({ name: 'file', size: 600 }), content('f'.repeat(600))]);
    const pax = paxHeader('x', { path: LONG_NAME });

    it.each([
      ['a header', entry.subarray(0, 100), 'a header'],
      ['the content', entry.subarray(0, 512 + 300), 'the content of an entry'],
      ['the padding', entry.subarray(0, 512 + 700), 'the content of an entry'],
      ['an extended header', pax.subarray(0, 512 + 50), 'an extended header'],
    ])('fails when it ends inside %s', (_where, bytes, inside) => {
      expect(() => parse([bytes])).toThrow(
        new TarFormatError(`the tar archive is truncated: it ends inside ${inside}`),
      );
    });
  });

  describe('fed in chunks', () => {
    let archive: Buffer;

    beforeEach(async () => {
      const written = await packed([
        { header: { name: 'bin/', type: 'directory', mode: 0o755 } },
        { header: { name: `bin/${LONG_NAME}`, mode: 0o755 }, body: '#!/bin/sh\necho long\n' },
        { header: { name: `${LONG_DIR}/tool`, mode: 0o755 }, body: '\x7fELF and more' },
        { header: { name: 'bin/sh', type: 'symlink', linkname: `/opt/${LONG_NAME}` } },
        { header: { name: 'etc/motd' }, body: 'x'.repeat(1500) },
      ]);
      // Its end blocks cut off, so that a pax size and a GNU header follow.
      archive = Buffer.concat([
        written.subarray(0, -1024),
        paxHeader('x', { size: '3' }),
        rawHeader({ name: 'gnu', size: 1, magic: 'gnu' }),
        content('abc'),
        END_BLOCKS,
      ]);
    });

    it('gives the same result for every split point', () => {
      const whole = parse([archive]);
      expect(whole.entries).toHaveLength(6);
      for (let at = 1; at < archive.length; at++) {
        expect(parse([archive.subarray(0, at), archive.subarray(at)])).toEqual(whole);
      }
    });

    it('gives the same result byte by byte', () => {
      const bytes = Array.from({ length: archive.length }, (_, i) => archive.subarray(i, i + 1));
      expect(parse(bytes)).toEqual(parse([archive]));
    });
  });

  describe('reading archives written by GNU tar', () => {
    let dir: string;

    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'braid-tar-'));
      const root = join(dir, 'root');
      await mkdir(join(root, 'bin'), { recursive: true });
      await mkdir(join(root, LONG_DIR), { recursive: true });
      await writeFile(join(root, 'bin', LONG_NAME), '\x7fELF long-named binary', { mode: 0o755 });
      await writeFile(join(root, LONG_DIR, LONG_NAME), 'deep');
      await symlink(`/bin/${LONG_NAME}`, join(root, 'bin', 'sh'));
      await link(join(root, 'bin', LONG_NAME), join(root, 'bin', `hard-${LONG_NAME}`));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    function gnuTar(format: string): Buffer {
      const files = ['bin', `bin/${LONG_NAME}`, `bin/hard-${LONG_NAME}`, 'bin/sh', LONG_DIR];
      return execFileSync('tar', [
        `--format=${format}`,
        '--owner=0',
        '--group=0',
        '--no-recursion',
        '-C',
        join(dir, 'root'),
        '-cf',
        '-',
        ...files,
        `${LONG_DIR}/${LONG_NAME}`,
      ]);
    }

    it.each(['gnu', 'pax', 'posix'])('reads long names and links in --format=%s', (format) => {
      const { entries, heads } = parse([gnuTar(format)]);
      const types = Object.fromEntries(entries.map((e) => [e.name.replace(/\/$/, ''), e.type]));
      expect(types).toEqual({
        bin: 'dir',
        [`bin/${LONG_NAME}`]: 'file',
        [`bin/hard-${LONG_NAME}`]: 'link',
        'bin/sh': 'symlink',
        [LONG_DIR]: 'dir',
        [`${LONG_DIR}/${LONG_NAME}`]: 'file',
      });
      expect(entries.find((e) => e.name === 'bin/sh')?.linkname).toBe(`/bin/${LONG_NAME}`);
      expect(entries.find((e) => e.type === 'link')?.linkname).toBe(`bin/${LONG_NAME}`);
      expect(heads[`bin/${LONG_NAME}`]).toBe('\x7fELF lon');
    });
  });
});

describe('TarHeaderSink', () => {
  async function names(blob: Buffer): Promise<string[]> {
    const seen: string[] = [];
    const source = Readable.from([blob.subarray(0, 700), blob.subarray(700)]);
    await pipeline(
      source,
      createGunzip(),
      new TarHeaderSink(HEAD_BYTES, (entry) => {
        seen.push(entry.name);
        return undefined;
      }),
    );
    return seen;
  }

  it('reads a gzipped archive at the end of a pipeline', async () => {
    const archive = await packed([
      { header: { name: 'a' }, body: 'a'.repeat(5000) },
      { header: { name: 'b' }, body: 'b' },
    ]);
    await expect(names(gzipSync(archive))).resolves.toEqual(['a', 'b']);
  });

  it('fails the pipeline when the archive is truncated', async () => {
    const archive = await packed([{ header: { name: 'a' }, body: 'a'.repeat(5000) }]);
    await expect(names(gzipSync(archive.subarray(0, 3000)))).rejects.toThrow(
      'the tar archive is truncated: it ends inside the content of an entry',
    );
  });
});
