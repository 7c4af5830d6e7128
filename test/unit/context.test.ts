import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import {
  chmod,
  mkdir,
  mkdtemp,
  readdir,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CONTEXT_MTIME, packContext, type PackResult } from '../../src/cli/context.js';
import { BraidError } from '../../src/errors.js';

interface TarEntry {
  name: string;
  type: string;
  mode: number;
  mtime: Date;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  linkname: string | null;
  content: string;
}

/** Reads the tar back with tar-stream, in the order it was written. */
async function readTar(file: string): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: unknown) => chunks.push(Buffer.from(chunk as Uint8Array)));
    stream.on('end', () => {
      entries.push({
        name: header.name,
        type: header.type,
        mode: header.mode,
        mtime: header.mtime,
        uid: header.uid,
        gid: header.gid,
        uname: header.uname,
        gname: header.gname,
        linkname: header.linkname,
        content: Buffer.concat(chunks).toString('utf8'),
      });
      next();
    });
  });
  await pipeline(createReadStream(file), extract);
  return entries;
}

async function names(packed: PackResult): Promise<string[]> {
  return (await readTar(packed.path)).map((entry) => entry.name);
}

let work: string;
let ctx: string;
let spool: string;
const packed: PackResult[] = [];

/** Writes files under the context; a name ending in `/` is a directory. */
async function tree(files: Record<string, string>, base = ctx): Promise<void> {
  for (const [name, content] of Object.entries(files)) {
    const target = path.join(base, name);
    if (name.endsWith('/')) {
      await mkdir(target, { recursive: true });
      continue;
    }
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, content);
  }
}

async function pack(options: { dockerfile?: string; maxBytes?: number } = {}): Promise<PackResult> {
  const result = await packContext(ctx, {
    maxBytes: options.maxBytes ?? 10 * 1024 * 1024,
    tmpDir: spool,
    ...(options.dockerfile !== undefined && { dockerfile: options.dockerfile }),
  });
  packed.push(result);
  return result;
}

async function refusal(promise: Promise<unknown>): Promise<BraidError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof BraidError) return err;
    throw err;
  }
  throw new Error('expected packing to be refused');
}

beforeEach(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'braid-context-test-'));
  ctx = path.join(work, 'ctx');
  spool = path.join(work, 'spool');
  await mkdir(ctx);
  await mkdir(spool);
  await tree({ Dockerfile: 'FROM scratch\nCOPY . /\n' });
});

afterEach(async () => {
  for (const result of packed.splice(0)) await result.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe('packContext honours .dockerignore', () => {
  it('leaves out **/*.log, node_modules and an excluded directory, but keeps !keep.log', async () => {
    await tree({
      '.dockerignore': '# build output\n**/*.log\n!keep.log\nnode_modules\nbuild/\n',
      'app.js': 'run()',
      'debug.log': 'noise',
      'keep.log': 'wanted',
      'src/deep/trace.log': 'noise',
      'src/deep/main.js': 'main()',
      'node_modules/left-pad/index.js': 'pad()',
      'build/out.bin': 'binary',
      'buildinfo.txt': 'not the build dir',
    });
    const result = await pack();
    expect(await names(result)).toEqual([
      '.dockerignore',
      'Dockerfile',
      'app.js',
      'buildinfo.txt',
      'keep.log',
      'src/',
      'src/deep/',
      'src/deep/main.js',
    ]);
    expect(result.files).toBe(6);
  });

  it('matches a bare name only at the root, as Docker does', async () => {
    await tree({
      '.dockerignore': 'secret.txt\n',
      'secret.txt': 'root secret',
      'sub/secret.txt': 'nested, still sent',
    });
    expect(await names(await pack())).toEqual([
      '.dockerignore',
      'Dockerfile',
      'sub/',
      'sub/secret.txt',
    ]);
  });

  it('matches case-sensitively, as Docker on Linux does', async () => {
    await tree({ '.dockerignore': '*.MD\n', 'README.md': 'kept', 'NOTES.MD': 'dropped' });
    expect(await names(await pack())).toEqual(['.dockerignore', 'Dockerfile', 'README.md']);
  });

  it('walks into an excluded directory only for the file an exception names', async () => {
    await tree({
      '.dockerignore': 'docs\n!docs/README.md\n',
      'docs/README.md': 'read me',
      'docs/internal.md': 'private',
    });
    // Like the Docker CLI, the excluded directory's own entry stays out.
    expect(await names(await pack())).toEqual(['.dockerignore', 'Dockerfile', 'docs/README.md']);
  });

  it('sends the Dockerfile and .dockerignore even when .dockerignore excludes them', async () => {
    await tree({ '.dockerignore': 'Dockerfile\n.dockerignore\n*.md\n', 'notes.md': 'x' });
    const result = await pack();
    expect(result.dockerfileInContext).toBe('Dockerfile');
    const entries = await readTar(result.path);
    expect(entries.map((e) => e.name)).toEqual(['.dockerignore', 'Dockerfile']);
    expect(entries.find((e) => e.name === 'Dockerfile')?.content).toBe('FROM scratch\nCOPY . /\n');
  });

  it('sends a Dockerfile given with -f from inside an excluded directory', async () => {
    await tree({
      '.dockerignore': 'docker\n',
      'docker/Dockerfile.prod': 'FROM scratch\n',
      'docker/compose.yaml': 'services: {}',
    });
    const result = await pack({ dockerfile: path.join(ctx, 'docker', 'Dockerfile.prod') });
    expect(result.dockerfileInContext).toBe('docker/Dockerfile.prod');
    expect(await names(result)).toEqual(['.dockerignore', 'Dockerfile', 'docker/Dockerfile.prod']);
  });
});

describe('packContext writes deterministic bytes', () => {
  beforeEach(async () => {
    await tree({ 'b.txt': 'bee', 'a/z.txt': 'zed', 'a.txt': 'ay', 'empty/': '', 'nil.txt': '' });
  });

  it('gives the same digest for two packs of the same tree', async () => {
    const first = await pack();
    const second = await pack();
    expect(second.digest).toBe(first.digest);
    expect(second.sizeBytes).toBe(first.sizeBytes);
    expect(first.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(first.sizeBytes).toBe((await stat(first.path)).size);
  });

  it('gives the same digest after a file is touched', async () => {
    const before = await pack();
    const later = new Date(Date.now() + 3_600_000);
    await utimes(path.join(ctx, 'b.txt'), later, later);
    await utimes(path.join(ctx, 'a'), later, later);
    expect((await pack()).digest).toBe(before.digest);
  });

  it('gives another digest when a file changes', async () => {
    const before = await pack();
    await writeFile(path.join(ctx, 'b.txt'), 'bees');
    expect((await pack()).digest).not.toBe(before.digest);
  });

  it('gives another digest when a file becomes executable', async () => {
    const before = await pack();
    await chmod(path.join(ctx, 'b.txt'), 0o755);
    const after = await pack();
    expect(after.digest).not.toBe(before.digest);
    const entry = (await readTar(after.path)).find((e) => e.name === 'b.txt');
    expect(entry?.mode).toBe(0o755);
  });

  it('sorts entries by path (code units) and normalises owner and times', async () => {
    await chmod(path.join(ctx, 'a.txt'), 0o640);
    const entries = await readTar((await pack()).path);
    expect(entries.map((e) => e.name)).toEqual([
      'Dockerfile',
      'a/',
      'a.txt',
      'a/z.txt',
      'b.txt',
      'empty/',
      'nil.txt',
    ]);
    for (const entry of entries) {
      expect(entry.mtime.toISOString()).toBe('1980-01-01T00:00:00.000Z');
      expect([entry.uid, entry.gid, entry.uname, entry.gname]).toEqual([0, 0, '', '']);
    }
    expect(CONTEXT_MTIME.toISOString()).toBe('1980-01-01T00:00:00.000Z');
    expect(entries.find((e) => e.name === 'a.txt')?.mode).toBe(0o640);
    expect(entries.find((e) => e.name === 'a/z.txt')?.content).toBe('zed');
    expect(entries.find((e) => e.name === 'empty/')?.type).toBe('directory');
  });

  it('keeps a symlink as a symlink with its target unchanged', async () => {
    await symlink('a/z.txt', path.join(ctx, 'zlink'));
    await symlink('missing/file', path.join(ctx, 'dangling'));
    const entries = await readTar((await pack()).path);
    expect(entries.find((e) => e.name === 'zlink')).toMatchObject({
      type: 'symlink',
      linkname: 'a/z.txt',
    });
    expect(entries.find((e) => e.name === 'dangling')).toMatchObject({
      type: 'symlink',
      linkname: 'missing/file',
    });
  });

  it('keeps a path longer than 100 characters', async () => {
    const long = `${'segment-of-a-long-path/'.repeat(6)}file.txt`;
    await tree({ [long]: 'deep' });
    const entries = await readTar((await pack()).path);
    expect(entries.find((e) => e.name === long)?.content).toBe('deep');
  });
});

describe('packContext refuses what it cannot send', () => {
  it('refuses a symlink that climbs out of the context, naming it', async () => {
    await tree({ 'sub/': '' });
    await symlink('../../outside', path.join(ctx, 'sub', 'escape'));
    const err = await refusal(pack());
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toBe(
      `symlink sub/escape in build context ${ctx} points outside the context (to ../../outside)`,
    );
  });

  it('refuses a symlink with an absolute target', async () => {
    await symlink('/etc/passwd', path.join(ctx, 'passwd'));
    const err = await refusal(pack());
    expect(err.message).toContain('symlink passwd ');
    expect(err.message).toContain('(to /etc/passwd)');
  });

  it('refuses a symlink that escapes through another in-context symlink', async () => {
    await symlink('.', path.join(ctx, 'here'));
    await symlink('here/..', path.join(ctx, 'up'));
    const err = await refusal(pack());
    expect(err.message).toContain('symlink up ');
  });

  it('ignores an escaping symlink that .dockerignore excludes', async () => {
    await tree({ '.dockerignore': 'escape\n' });
    await symlink('../..', path.join(ctx, 'escape'));
    expect(await names(await pack())).toEqual(['.dockerignore', 'Dockerfile']);
  });

  it('refuses a missing Dockerfile, naming it', async () => {
    await rm(path.join(ctx, 'Dockerfile'));
    const err = await refusal(pack());
    expect(err.message).toBe(`Dockerfile ${path.join(ctx, 'Dockerfile')} not found`);
  });

  it('falls back to a lowercase dockerfile when none is named, as Docker does', async () => {
    await rm(path.join(ctx, 'Dockerfile'));
    await tree({ dockerfile: 'FROM scratch\n' });
    expect((await pack()).dockerfileInContext).toBe('dockerfile');
  });

  it('refuses a context directory that does not exist', async () => {
    const missing = path.join(work, 'nowhere');
    const err = await refusal(packContext(missing, { maxBytes: 1024 }));
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toBe(`build context ${missing} does not exist`);
  });

  it('refuses a context that is a file', async () => {
    const file = path.join(ctx, 'Dockerfile');
    const err = await refusal(packContext(file, { maxBytes: 1024 }));
    expect(err.message).toBe(`build context ${file} is not a directory`);
  });

  it('refuses a context over the size limit, naming size and limit, and leaves no temp file', async () => {
    await tree({ 'data/big.bin': 'x'.repeat(64 * 1024) });
    const err = await refusal(pack({ maxBytes: 32 * 1024 }));
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toMatch(
      new RegExp(
        `^build context ${ctx} is over the limit of 32\\.0 KiB \\(at least 6\\d\\.\\d KiB; ` +
          `largest file data/big\\.bin, 64\\.0 KiB\\); exclude files in \\.dockerignore$`,
      ),
    );
    expect(err.message).not.toContain('\n');
    expect(await readdir(spool)).toEqual([]);
  });

  it('stops writing when headers push the tar over the limit, and leaves no temp file', async () => {
    // A non-ASCII name needs a PAX header, which the walk's estimate leaves out.
    await tree({ 'café.txt': '' });
    const err = await refusal(pack({ maxBytes: 3000 }));
    expect(err.message).toMatch(
      new RegExp(`^build context ${ctx} is over the limit of 2\\.9 KiB \\(at least 3\\.\\d KiB`),
    );
    expect(await readdir(spool)).toEqual([]);
  });

  it('does not count excluded files toward the size limit', async () => {
    await tree({ '.dockerignore': 'data\n', 'data/big.bin': 'x'.repeat(64 * 1024) });
    const result = await pack({ maxBytes: 32 * 1024 });
    expect(result.sizeBytes).toBeLessThanOrEqual(32 * 1024);
  });
});

describe('packContext skips special files', () => {
  let server: Server | undefined;

  afterEach(async () => {
    const open = server;
    server = undefined;
    if (open) await new Promise<void>((resolve) => open.close(() => resolve()));
  });

  it('leaves out a FIFO and a socket and lists them as skipped', async () => {
    execFileSync('mkfifo', [path.join(ctx, 'pipe')]);
    const listening = createServer();
    server = listening;
    await new Promise<void>((resolve) => listening.listen(path.join(ctx, 'app.sock'), resolve));
    const result = await pack();
    expect(result.skipped).toEqual(['app.sock', 'pipe']);
    expect(await names(result)).toEqual(['Dockerfile']);
  });
});

describe('the packed context file', () => {
  it('lives in tmpDir until cleanup removes it, and cleanup may run twice', async () => {
    const result = await packContext(ctx, { maxBytes: 1024 * 1024, tmpDir: spool });
    expect(path.dirname(result.path)).toBe(spool);
    expect(await readdir(spool)).toEqual([path.basename(result.path)]);
    await result.cleanup();
    await result.cleanup();
    expect(await readdir(spool)).toEqual([]);
  });
});

/** Packs `context` as build-run does, with stdin from `input` when given. */
async function packFrom(
  context: string,
  options: { dockerfile?: string; maxBytes?: number; input?: Buffer | string } = {},
): Promise<PackResult> {
  const result = await packContext(context, {
    maxBytes: options.maxBytes ?? 10 * 1024 * 1024,
    tmpDir: spool,
    ...(options.dockerfile !== undefined && { dockerfile: options.dockerfile }),
    ...(options.input !== undefined && { stdin: Readable.from([Buffer.from(options.input)]) }),
  });
  packed.push(result);
  return result;
}

/** `tar -C dir -cf - .`, as a user makes a context tar. */
function tarOf(dir: string, ...flags: string[]): Buffer {
  return execFileSync('tar', ['-C', dir, ...flags, '-cf', '-', '.'], {
    maxBuffer: 64 * 1024 * 1024,
  });
}

/** A tar with exactly these entries, for archives `tar` would not make. */
async function craftedTar(entries: EntryHeader[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const { content, ...header } of entries) pack.entry(header, content ?? '');
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}
type EntryHeader = Partial<tar.Header> & { name: string; content?: string };

describe('packContext sends a Dockerfile from outside the context', () => {
  beforeEach(async () => {
    await rm(path.join(ctx, 'Dockerfile'));
    await tree({ 'app.js': 'run()', 'Dockerfile.outside': 'FROM scratch\nCOPY app.js /\n' }, ctx);
    await tree({ Dockerfile: 'FROM scratch\nCOPY app.js /\n' }, work);
  });

  it('puts it under .braid-dockerfile/ in the tar and names that path for the spec', async () => {
    const result = await pack({ dockerfile: path.join(work, 'Dockerfile') });
    expect(result.dockerfileInContext).toBe('.braid-dockerfile/Dockerfile');
    const entries = await readTar(result.path);
    expect(entries.map((e) => e.name)).toEqual([
      '.braid-dockerfile/',
      '.braid-dockerfile/Dockerfile',
      'Dockerfile.outside',
      'app.js',
    ]);
    expect(entries[1]).toMatchObject({
      content: 'FROM scratch\nCOPY app.js /\n',
      mode: 0o644,
      uid: 0,
      mtime: CONTEXT_MTIME,
    });
    expect(result.files).toBe(3);
  });

  it('gives the same digest for the same Dockerfile, whether -f names it or stdin (-f -) holds it', async () => {
    const outside = path.join(work, 'Dockerfile');
    const first = await pack({ dockerfile: outside });
    await chmod(outside, 0o600);
    const again = await pack({ dockerfile: outside });
    const fromStdin = await packFrom(ctx, {
      dockerfile: '-',
      input: 'FROM scratch\nCOPY app.js /\n',
    });
    expect(again.digest).toBe(first.digest);
    expect(fromStdin.digest).toBe(first.digest);
    expect(fromStdin.dockerfileInContext).toBe('.braid-dockerfile/Dockerfile');
    await writeFile(outside, 'FROM scratch\nCOPY . /\n');
    expect((await pack({ dockerfile: outside })).digest).not.toBe(first.digest);
  });

  it('keeps its own name: -f ../docker/Dockerfile.prod is .braid-dockerfile/Dockerfile.prod', async () => {
    await tree({ 'docker/Dockerfile.prod': 'FROM scratch\n' }, work);
    const result = await pack({ dockerfile: path.join(work, 'docker', 'Dockerfile.prod') });
    expect(result.dockerfileInContext).toBe('.braid-dockerfile/Dockerfile.prod');
  });

  it("moves to .braid-dockerfile-1 when the context has a .braid-dockerfile, leaving the user's file alone", async () => {
    await tree({ '.braid-dockerfile/Dockerfile': 'the user own file', '.braid-dockerfile-2': 'x' });
    const result = await pack({ dockerfile: path.join(work, 'Dockerfile') });
    expect(result.dockerfileInContext).toBe('.braid-dockerfile-1/Dockerfile');
    const entries = await readTar(result.path);
    expect(entries.find((e) => e.name === '.braid-dockerfile/Dockerfile')?.content).toBe(
      'the user own file',
    );
    expect(entries.find((e) => e.name === '.braid-dockerfile-1/Dockerfile')?.content).toBe(
      'FROM scratch\nCOPY app.js /\n',
    );
    // Determined by the tree alone: packing again gives the same bytes.
    expect((await pack({ dockerfile: path.join(work, 'Dockerfile') })).digest).toBe(result.digest);
  });

  it('applies and sends the Dockerfile.dockerignore beside it instead of the context .dockerignore', async () => {
    await tree({ '.dockerignore': 'app.js\n', 'notes.md': 'x' });
    await tree({ 'Dockerfile.dockerignore': '*.md\n.dockerignore\n' }, work);
    const result = await pack({ dockerfile: path.join(work, 'Dockerfile') });
    const entries = await readTar(result.path);
    expect(entries.map((e) => e.name)).toEqual([
      '.braid-dockerfile/',
      '.braid-dockerfile/Dockerfile',
      '.braid-dockerfile/Dockerfile.dockerignore',
      'Dockerfile.outside',
      'app.js',
    ]);
    expect(entries[2]?.content).toBe('*.md\n.dockerignore\n');
  });

  it('counts it toward the size limit', async () => {
    await writeFile(path.join(work, 'Dockerfile'), `FROM scratch\n#${'x'.repeat(64 * 1024)}\n`);
    const err = await refusal(
      pack({ dockerfile: path.join(work, 'Dockerfile'), maxBytes: 32 * 1024 }),
    );
    expect(err.message).toMatch(/^build context .* is over the limit of 32\.0 KiB/);
    expect(await readdir(spool)).toEqual([]);
  });
});

describe('packContext uses <Dockerfile>.dockerignore as BuildKit does', () => {
  it('applies docker/Dockerfile.prod.dockerignore instead of .dockerignore, and sends it', async () => {
    await tree({
      '.dockerignore': 'src\n',
      'docker/Dockerfile.prod': 'FROM scratch\n',
      'docker/Dockerfile.prod.dockerignore': 'docker\n*.log\n',
      'src/main.js': 'main()',
      'debug.log': 'noise',
    });
    const result = await pack({ dockerfile: path.join(ctx, 'docker', 'Dockerfile.prod') });
    expect(await names(result)).toEqual([
      '.dockerignore',
      'Dockerfile',
      'docker/Dockerfile.prod',
      'docker/Dockerfile.prod.dockerignore',
      'src/',
      'src/main.js',
    ]);
  });
});

describe('packContext reads the context from stdin (-)', () => {
  beforeEach(async () => {
    await tree({
      '.dockerignore': '*.log\n',
      'app.js': 'run()',
      'bin/tool': '#!/bin/sh\n',
      'debug.log': 'noise',
      'empty/': '',
    });
    await chmod(path.join(ctx, 'bin', 'tool'), 0o755);
    await symlink('bin/tool', path.join(ctx, 'tool'));
  });

  it('packs a tar on stdin to the same bytes as the directory it was made from', async () => {
    const direct = await pack();
    const result = await packFrom('-', { input: tarOf(ctx) });
    expect(result.digest).toBe(direct.digest);
    expect(result.dockerfileInContext).toBe('Dockerfile');
    expect(await names(result)).not.toContain('debug.log');
    const tool = (await readTar(result.path)).find((e) => e.name === 'bin/tool');
    expect(tool?.mode).toBe(0o755);
  });

  it('reads a tar that arrives in small pieces, as a pipe delivers it', async () => {
    const whole = tarOf(ctx);
    const pieces: Buffer[] = [];
    for (let i = 0; i < whole.length; i += 100) pieces.push(whole.subarray(i, i + 100));
    const result = await packContext('-', {
      maxBytes: 10 * 1024 * 1024,
      tmpDir: spool,
      stdin: Readable.from(pieces),
    });
    packed.push(result);
    expect(result.digest).toBe((await pack()).digest);
  });

  it('packs a gzip tar on stdin to the same bytes as the plain tar', async () => {
    const plain = await packFrom('-', { input: tarOf(ctx) });
    const gzipped = await packFrom('-', { input: gzipSync(tarOf(ctx)) });
    expect(gzipped.digest).toBe(plain.digest);
  });

  it('gives the same digest for tars of the same tree made with other owners and times', async () => {
    const plain = await packFrom('-', { input: tarOf(ctx) });
    const other = await packFrom('-', {
      input: tarOf(ctx, '--owner=1234', '--group=99', '--mtime=2001-02-03', '--format=v7'),
    });
    expect(other.digest).toBe(plain.digest);
  });

  it('reads -f as a path inside the tar', async () => {
    await tree({ 'docker/Dockerfile.dev': 'FROM scratch\n' });
    const result = await packFrom('-', { input: tarOf(ctx), dockerfile: 'docker/Dockerfile.dev' });
    expect(result.dockerfileInContext).toBe('docker/Dockerfile.dev');
    const err = await refusal(packFrom('-', { input: tarOf(ctx), dockerfile: '../Dockerfile' }));
    expect(err.message).toBe(
      '-f ../Dockerfile: with the context on stdin, -f names a file inside the tar',
    );
    const missing = await refusal(packFrom('-', { input: tarOf(ctx), dockerfile: 'Nope' }));
    expect(missing.message).toBe('Dockerfile Nope (in the tar on stdin) not found');
  });

  it('takes stdin that is not a tar as a Dockerfile with an empty context, as docker does', async () => {
    const result = await packFrom('-', { input: 'FROM scratch\nCMD ["true"]\n' });
    expect(result.dockerfileInContext).toBe('Dockerfile');
    const entries = await readTar(result.path);
    expect(entries.map((e) => [e.name, e.content])).toEqual([
      ['Dockerfile', 'FROM scratch\nCMD ["true"]\n'],
    ]);
    const err = await refusal(packFrom('-', { input: 'FROM scratch\n', dockerfile: 'Other' }));
    expect(err.message).toBe(
      'stdin holds a Dockerfile, not a context tar, and -f names another (Other): give one of them',
    );
  });

  it('refuses an empty stdin as an empty Dockerfile', async () => {
    const err = await refusal(packFrom('-', { input: '' }));
    expect(err.message).toBe('Dockerfile - (stdin) is empty');
  });

  it('refuses stdin for both the context and the Dockerfile', async () => {
    const err = await refusal(packFrom('-', { input: tarOf(ctx), dockerfile: '-' }));
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toBe(
      'cannot read both the build context and the Dockerfile from stdin (- and -f -)',
    );
  });

  it('refuses a bzip2 or xz tar in words, naming what is supported', async () => {
    for (const [tool, name] of [
      ['bzip2', 'bzip2'],
      ['xz', 'xz'],
    ] as const) {
      const compressed = execFileSync(tool, ['-c'], { input: tarOf(ctx) });
      const err = await refusal(packFrom('-', { input: compressed }));
      expect(err.message).toBe(
        `a ${name}-compressed build context on stdin is not supported: send a plain or gzip-compressed tar`,
      );
    }
  });

  it('refuses a terminal on stdin instead of waiting for typing', async () => {
    const terminal = Object.assign(Readable.from([]), { isTTY: true });
    const err = await refusal(
      packContext('-', { maxBytes: 1024 * 1024, tmpDir: spool, stdin: terminal }),
    );
    expect(err.message).toMatch(
      /^braid build - reads a context tar or a Dockerfile from stdin, which is a terminal/,
    );
  });

  it('stops reading a tar on stdin over the size limit, and leaves no temp file', async () => {
    await tree({ 'data/big.bin': 'x'.repeat(256 * 1024) });
    const err = await refusal(packFrom('-', { input: tarOf(ctx), maxBytes: 64 * 1024 }));
    expect(err.message).toMatch(/^build context - \(stdin\) is over the limit of 64\.0 KiB/);
    const gzipped = await refusal(
      packFrom('-', { input: gzipSync(tarOf(ctx)), maxBytes: 64 * 1024 }),
    );
    expect(gzipped.message).toMatch(/^build context - \(stdin\) is over the limit of 64\.0 KiB/);
    expect(await readdir(spool)).toEqual([]);
  });

  it('refuses a tar entry that climbs out with ..', async () => {
    const input = await craftedTar([
      { name: 'Dockerfile', content: 'FROM scratch\n' },
      { name: 'a/../../escape', content: 'x' },
    ]);
    const err = await refusal(packFrom('-', { input }));
    expect(err.message).toBe(
      'the build context on stdin: entry a/../../escape climbs out of the archive with ".."',
    );
    expect(await readdir(spool)).toEqual([]);
    expect(await readdir(work)).not.toContain('escape');
  });

  it('refuses an entry written through a symlink the tar planted', async () => {
    const input = await craftedTar([
      { name: 'Dockerfile', content: 'FROM scratch\n' },
      { name: 'out', type: 'symlink', linkname: work },
      { name: 'out/planted', content: 'x' },
    ]);
    const err = await refusal(packFrom('-', { input }));
    expect(err.message).toBe(
      'the build context on stdin: entry out/planted lies under the symlink out',
    );
    expect(await readdir(work)).not.toContain('planted');
  });

  it('refuses a symlink in the tar that points outside, as for a directory', async () => {
    const input = await craftedTar([
      { name: 'Dockerfile', content: 'FROM scratch\n' },
      { name: 'passwd', type: 'symlink', linkname: '/etc/passwd' },
    ]);
    const err = await refusal(packFrom('-', { input }));
    expect(err.message).toBe(
      'symlink passwd in build context - (stdin) points outside the context (to /etc/passwd)',
    );
  });

  it('stores a hard link in the tar as a file with the same bytes', async () => {
    const input = await craftedTar([
      { name: './', type: 'directory', mode: 0o755 },
      { name: './Dockerfile', content: 'FROM scratch\n', mode: 0o644 },
      { name: './copy', type: 'link', linkname: './Dockerfile' },
    ]);
    const entries = await readTar((await packFrom('-', { input })).path);
    expect(entries.map((e) => [e.name, e.type, e.content])).toEqual([
      ['Dockerfile', 'file', 'FROM scratch\n'],
      ['copy', 'file', 'FROM scratch\n'],
    ]);
  });
});

describe('packContext refuses remote contexts in words', () => {
  it.each([
    ['https://github.com/docker/buildx.git#v0.12:examples', 'git'],
    ['git@github.com:docker/buildx.git', 'git'],
    ['git://example.com/repo', 'git'],
    ['github.com/docker/buildx', 'git'],
  ])('refuses %s as a git context', async (url) => {
    const err = await refusal(packContext(url, { maxBytes: 1024 }));
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toBe(
      `braid build does not support git contexts (${url}): clone it and pass the directory`,
    );
  });

  it('refuses a tarball URL, pointing at stdin', async () => {
    const url = 'https://example.com/context.tar.gz';
    const err = await refusal(packContext(url, { maxBytes: 1024 }));
    expect(err.message).toBe(
      `braid build does not support URL contexts (${url}): download it and pass it on stdin (braid build - < FILE)`,
    );
  });
});
