/**
 * Packs a build context into a tar file the way `docker build` does,
 * honouring `.dockerignore`, with bytes that depend only on the inputs: the
 * same tree and Dockerfile always give the same digest, so a resubmit
 * uploads nothing.
 *
 * Decisions, and where they follow Docker:
 * - `.dockerignore` uses Docker's matching (`@balena/dockerignore`, case
 *   sensitive as on Linux). An excluded directory is not walked unless an
 *   exception pattern (`!dir/file`) starts inside it, as the Docker CLI does.
 *   A `<Dockerfile>.dockerignore` next to the Dockerfile wins over the
 *   context's `.dockerignore`, as in BuildKit and buildx.
 * - The Dockerfile and the ignore file in use are sent even when it excludes
 *   them: the Docker CLI re-includes both (its TrimBuildFilesFromExcludes),
 *   because the builder must read them.
 * - A Dockerfile outside the context (`-f ../Dockerfile`, or `-f -` from
 *   stdin) is sent inside the tar under `.braid-dockerfile/<its name>` (with
 *   its own `.dockerignore` beside it), and the spec names that path, so the
 *   farm sees one content-addressed input as always. The Docker CLI splices
 *   it in under a random name; this name is fixed so the digest stays
 *   stable, and becomes `.braid-dockerfile-1`, `-2`... when the context
 *   already holds one. The engine's BuildKit does not apply `.dockerignore`
 *   to a tar, so `COPY . /` copies that directory too.
 * - `-` reads the context from stdin as `docker build -` does: a tar (plain
 *   or gzip) is unpacked into a temp directory and packed by these same
 *   rules; anything else is a Dockerfile with an empty context.
 * - A git or http(s) URL that is not a local path is refused: braid fetches
 *   nothing (src/cli/context-url.ts).
 * - Timestamps are 1980-01-01T00:00:00Z, not 0: tools run in a build (zip,
 *   Python's zipfile) refuse files dated before 1980. uid/gid are 0 and
 *   user/group names empty; permission bits (incl. exec, setuid) are kept.
 * - Entries are sorted by path (code-unit order), parents before children.
 *   Hard links are stored as separate regular files, so a copy and a hard
 *   link of the same bytes pack the same.
 * - Symlinks are stored as symlinks with their target unchanged; a target
 *   that is absolute or leads out of the context is refused, because the
 *   link would point at something on the builder, not in the context.
 * - Sockets, FIFOs and device nodes are skipped and listed in `skipped`
 *   (the Docker CLI skips sockets, and opening a FIFO blocks); a build can
 *   use none of them, and a rootless engine cannot create device nodes.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Dirent, Stats } from 'node:fs';
import {
  type FileHandle,
  lstat,
  mkdtemp,
  open,
  readFile,
  readdir,
  readlink,
  realpath,
  rm,
  stat,
  unlink,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import dockerignore from '@balena/dockerignore';
import tar from 'tar-stream';
import { BraidError, UsageError } from '../errors.js';
import { compareText } from '../text.js';
import {
  contextFromStdin,
  dockerfileFromStdin,
  type StdinOptions,
  type StdinSource,
} from './context-stdin.js';
import { remoteContextKind, remoteContextRefusal } from './context-url.js';

export interface PackedContext {
  /** The tar file; remove it with cleanup(). */
  path: string;
  /** `sha256:<hex>` of the tar's bytes. */
  digest: string;
  sizeBytes: number;
  /** Regular files and symlinks in the tar (directories not counted). */
  files: number;
  /** Removes the tar file; safe to call more than once. */
  cleanup(): Promise<void>;
}

export interface PackOptions {
  /**
   * The Dockerfile as given by `-f`: relative to the working directory, or
   * absolute; `-` reads it from stdin. With the context on stdin, a path
   * inside that tar. Default: `Dockerfile` in the context (or `dockerfile`,
   * as Docker falls back to when only that exists).
   */
  dockerfile?: string;
  /** The tar may not grow beyond this; packing stops as soon as it would. */
  maxBytes: number;
  /** Where the tar file goes; default the OS temp directory. */
  tmpDir?: string;
  /** What `-` reads, as the context or the Dockerfile; default process.stdin. */
  stdin?: StdinSource;
}

export interface PackResult extends PackedContext {
  /** Path of the Dockerfile inside the tar, forward slashes. */
  dockerfileInContext: string;
  /** Sockets, FIFOs and devices that were left out, context-relative. */
  skipped: string[];
}

/** 1980-01-01T00:00:00Z: the earliest time every archive format (zip, DOS) can hold. */
export const CONTEXT_MTIME = new Date(Date.UTC(1980, 0, 1));

/** The context or Dockerfile given as `-`: read from stdin. */
export const STDIN = '-';
/** How messages name what came from stdin. */
const STDIN_SHOWN = '- (stdin)';
/** The directory that holds a Dockerfile from outside the context, in the tar. */
export const OUTSIDE_DOCKERFILE_DIR = '.braid-dockerfile';
/** Mode of what is spliced in: the same whether the Dockerfile came from a file or stdin. */
const SPLICED_FILE_MODE = 0o644;
const SPLICED_DIR_MODE = 0o755;

const BLOCK = 512;
/** Two zero blocks end a tar. */
const TAR_TRAILER = 2 * BLOCK;
/** lstat/readlink calls in flight while walking one directory. */
const STAT_CONCURRENCY = 32;

type ContextEntry =
  | { kind: 'directory'; rel: string; mode: number }
  /** `source`: where the bytes are when not at `rel` under the context (spliced files). */
  | { kind: 'file'; rel: string; mode: number; size: number; source?: string }
  | { kind: 'symlink'; rel: string; mode: number; target: string };

/** A file from outside the context, sent under the reserved directory. */
interface OutsideFile {
  /** Real path of the bytes. */
  source: string;
  /** Its name inside the reserved directory. */
  name: string;
  size: number;
}

/** What to pack: a directory, its Dockerfile, and the ignore file in use. */
interface ContextInput {
  /** How messages name the context: the path given, or `- (stdin)`. */
  shown: string;
  /** Real path of the directory packed. */
  root: string;
  dockerfile: { inside: string } | { outside: OutsideFile };
  /** The ignore file in use, when there is one. */
  ignore?: { file: string; inside?: string; outside?: OutsideFile };
  /** Left out before packing (special files of a tar on stdin). */
  skipped: string[];
}

/**
 * Packs `context` (a directory, or `-` for stdin) into a temp tar file,
 * hashing while writing; refuses with a one-line BraidError naming the path
 * when the context cannot be sent.
 */
export async function packContext(context: string, options: PackOptions): Promise<PackResult> {
  if (!(options.maxBytes > 0)) {
    throw invalid(`context size limit must be a positive number of bytes, got ${options.maxBytes}`);
  }
  if (context === STDIN && options.dockerfile === STDIN) {
    throw invalid('cannot read both the build context and the Dockerfile from stdin (- and -f -)');
  }
  if (context !== STDIN && options.dockerfile !== STDIN) {
    const root = await contextRoot(context);
    return packInput(await localInput(context, root, options.dockerfile), options);
  }
  // The context directory is checked before stdin is read.
  const root = context === STDIN ? undefined : await contextRoot(context);
  const workDir = await mkdtemp(path.join(options.tmpDir ?? tmpdir(), 'braid-stdin-'));
  try {
    const stdinOptions: StdinOptions = {
      workDir,
      maxBytes: options.maxBytes,
      tooLarge: (bytes) => tooLarge(STDIN_SHOWN, options.maxBytes, bytes, []),
    };
    const stdin = options.stdin ?? process.stdin;
    // Awaited here: the work directory must outlive the packing.
    if (root === undefined) {
      return await packInput(await stdinInput(stdin, stdinOptions, options.dockerfile), options);
    }
    const file = await dockerfileFromStdin(stdin, stdinOptions);
    const size = await dockerfileSize(file, STDIN_SHOWN);
    return await packInput(
      {
        shown: context,
        root,
        dockerfile: { outside: { source: file, name: 'Dockerfile', size } },
        ...(await ignoreInUse(root, undefined)),
        skipped: [],
      },
      options,
    );
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

/** A context directory and a Dockerfile given as a path (or the default). */
async function localInput(
  context: string,
  root: string,
  given: string | undefined,
): Promise<ContextInput> {
  let dockerfile = given ?? path.join(context, 'Dockerfile');
  if (given === undefined && !(await exists(dockerfile))) {
    const lowercase = path.join(context, 'dockerfile');
    if (await exists(lowercase)) dockerfile = lowercase;
  }
  return {
    shown: context,
    root,
    dockerfile: await locateDockerfile(root, dockerfile, dockerfile),
    ...(await ignoreInUse(root, dockerfile)),
    skipped: [],
  };
}

/** `braid build -`: a tar from stdin, unpacked; or a Dockerfile with an empty context. */
async function stdinInput(
  stdin: StdinSource,
  options: StdinOptions,
  given: string | undefined,
): Promise<ContextInput> {
  const context = await contextFromStdin(stdin, options);
  const root = await realpath(context.dir);
  if (context.kind === 'dockerfile') {
    if (given !== undefined) {
      throw invalid(
        `stdin holds a Dockerfile, not a context tar, and -f names another (${given}): give one of them`,
      );
    }
    await dockerfileSize(path.join(root, 'Dockerfile'), STDIN_SHOWN);
    return { shown: STDIN_SHOWN, root, dockerfile: { inside: 'Dockerfile' }, skipped: [] };
  }
  // As docker: -f names a file inside the tar.
  let rel = given ?? 'Dockerfile';
  const normal = path.posix.normalize(rel);
  if (path.isAbsolute(rel) || normal === '..' || normal.startsWith('../')) {
    throw invalid(`-f ${rel}: with the context on stdin, -f names a file inside the tar`);
  }
  if (given === undefined && !(await exists(path.join(root, rel)))) {
    if (await exists(path.join(root, 'dockerfile'))) rel = 'dockerfile';
  }
  const dockerfile = path.join(root, rel);
  return {
    shown: STDIN_SHOWN,
    root,
    dockerfile: await locateDockerfile(root, dockerfile, `${rel} (in the tar on stdin)`),
    ...(await ignoreInUse(root, dockerfile)),
    skipped: context.skipped,
  };
}

/** The real path of the context directory, which must exist and be a directory. */
async function contextRoot(dir: string): Promise<string> {
  const info = await stat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') {
      // As docker: a URL is one only when no such path exists.
      const remote = remoteContextKind(dir);
      if (remote !== undefined) throw remoteContextRefusal(dir, remote);
      throw invalid(`build context ${dir} does not exist`, err);
    }
    throw fsError(`cannot open build context ${dir}`, err);
  });
  if (!info.isDirectory()) throw invalid(`build context ${dir} is not a directory`);
  return realpath(dir);
}

/**
 * Where the Dockerfile at `file` (named `shown` in messages) goes: its path
 * inside the context, or its bytes from outside it.
 */
async function locateDockerfile(
  root: string,
  file: string,
  shown: string,
): Promise<ContextInput['dockerfile']> {
  const size = await dockerfileSize(file, shown);
  const real = await realpath(file);
  const rel = insidePath(root, real);
  if (rel !== undefined && rel !== '') return { inside: rel };
  return { outside: { source: real, name: path.basename(file), size } };
}

/** The size of a Dockerfile, refusing one that is missing, empty or not a file. */
async function dockerfileSize(file: string, shown: string): Promise<number> {
  const info = await stat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') {
      throw invalid(`Dockerfile ${shown} not found`, err);
    }
    throw fsError(`cannot open Dockerfile ${shown}`, err);
  });
  if (!info.isFile()) throw invalid(`Dockerfile ${shown} is not a regular file`);
  if (info.size === 0) throw invalid(`Dockerfile ${shown} is empty`);
  return info.size;
}

/**
 * The ignore file in use, as BuildKit picks it: `<Dockerfile>.dockerignore`
 * beside the Dockerfile when there is one, else the context's `.dockerignore`.
 */
async function ignoreInUse(
  root: string,
  dockerfile: string | undefined,
): Promise<Pick<ContextInput, 'ignore'>> {
  const own = dockerfile === undefined ? undefined : `${dockerfile}.dockerignore`;
  const ownInfo = own === undefined ? undefined : await stat(own).catch(() => undefined);
  if (own !== undefined && ownInfo?.isFile() === true) {
    const real = await realpath(own);
    const rel = insidePath(root, real);
    return {
      ignore:
        rel === undefined
          ? {
              file: real,
              outside: { source: real, name: path.basename(own), size: ownInfo.size },
            }
          : { file: real, inside: rel },
    };
  }
  return { ignore: { file: path.join(root, '.dockerignore'), inside: '.dockerignore' } };
}

/** `real`'s path inside `root`, forward slashes ('' for root itself); undefined outside it. */
function insidePath(root: string, real: string): string | undefined {
  const rel = path.relative(root, real);
  if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) return undefined;
  return rel.split(path.sep).join('/');
}

/** Walks, splices and writes one context. */
async function packInput(input: ContextInput, options: PackOptions): Promise<PackResult> {
  const { shown, root, dockerfile, ignore } = input;
  const keep = [
    ...('inside' in dockerfile ? [dockerfile.inside] : []),
    ...(ignore?.inside !== undefined ? [ignore.inside] : []),
  ];
  const matcher = await readIgnoreRules(ignore?.file, keep);
  const walked = await walkContext(shown, root, matcher, options.maxBytes);
  const entries = walked.entries;
  let dockerfileInContext: string;
  if ('inside' in dockerfile) {
    dockerfileInContext = dockerfile.inside;
  } else {
    const dir = reservedDir(entries);
    const spliced = [dockerfile.outside, ...(ignore?.outside ? [ignore.outside] : [])];
    entries.push({ kind: 'directory', rel: dir, mode: SPLICED_DIR_MODE });
    for (const file of spliced) {
      entries.push({
        kind: 'file',
        rel: `${dir}/${file.name}`,
        mode: SPLICED_FILE_MODE,
        size: file.size,
        source: file.source,
      });
    }
    entries.sort((a, b) => compareText(a.rel, b.rel));
    const bytes = entries.reduce(
      (sum, entry) => sum + BLOCK + (entry.kind === 'file' ? padded(entry.size) : 0),
      TAR_TRAILER,
    );
    if (bytes > options.maxBytes) throw tooLarge(shown, options.maxBytes, bytes, entries);
    dockerfileInContext = `${dir}/${dockerfile.outside.name}`;
  }
  const skipped = [...input.skipped, ...walked.skipped].sort(compareText);
  const tarPath = path.join(options.tmpDir ?? tmpdir(), `braid-context-${randomUUID()}.tar`);
  const cleanup = async (): Promise<void> => {
    await unlink(tarPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  };
  try {
    const written = await writeTar(shown, root, entries, tarPath, options.maxBytes);
    return {
      path: tarPath,
      digest: `sha256:${written.sha256}`,
      sizeBytes: written.bytes,
      files: entries.filter((entry) => entry.kind !== 'directory').length,
      dockerfileInContext,
      skipped,
      cleanup,
    };
  } catch (err) {
    await cleanup().catch(() => undefined);
    throw err;
  }
}

/** The first of `.braid-dockerfile`, `.braid-dockerfile-1`, ... that no packed path starts with. */
function reservedDir(entries: readonly ContextEntry[]): string {
  const taken = new Set(entries.map((entry) => entry.rel.split('/')[0]));
  let dir = OUTSIDE_DOCKERFILE_DIR;
  for (let n = 1; taken.has(dir); n++) dir = `${OUTSIDE_DOCKERFILE_DIR}-${n}`;
  return dir;
}

/** What `.dockerignore` excludes, and which exception patterns can re-include. */
interface IgnoreRules {
  excludes(rel: string): boolean;
  /** Whether an exception pattern starts inside `dirRel`, so the excluded dir must be walked. */
  hasExceptionUnder(dirRel: string): boolean;
}

/** The rules of `file` (none when absent), never excluding the paths in `keep`. */
async function readIgnoreRules(
  file: string | undefined,
  keep: readonly string[],
): Promise<IgnoreRules> {
  const text =
    file === undefined
      ? ''
      : await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return '';
          throw fsError(`cannot read ${path.basename(file)}`, err);
        });
  // Docker drops a UTF-8 byte order mark at the start of the file.
  const patterns = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  // The package's CommonJS export carries the factory as `default` too.
  const matcher = dockerignore.default({ ignorecase: false }).add(patterns);
  // As the Docker CLI does: the builder needs both files even if excluded.
  for (const rel of keep) {
    if (matcher.ignores(rel)) {
      const exception = `!${escapeGlob(rel)}`;
      patterns.push(exception);
      matcher.add(exception);
    }
  }
  const exceptions = patterns.flatMap((line) => {
    if (line.startsWith('#')) return [];
    const trimmed = line.trim();
    if (!trimmed.startsWith('!')) return [];
    const cleaned = path.posix.normalize(trimmed.slice(1).trim()).replace(/(.)\/$/, '$1');
    return cleaned === '.' || cleaned === '' ? [] : [cleaned.replace(/^\//, '')];
  });
  return {
    excludes: (rel) => matcher.ignores(rel),
    hasExceptionUnder: (dirRel) =>
      exceptions.some((pattern) => `${pattern}/`.startsWith(`${dirRel}/`)),
  };
}

/** `*`, `?`, `[` and `\` in a file name, taken literally by the matcher. */
function escapeGlob(name: string): string {
  return name.replace(/[*?[\]\\]/g, (ch) => `\\${ch}`);
}

/**
 * Lists what goes into the tar, sorted by path. Stops as soon as the tar
 * would exceed `maxBytes`, before a byte of content is read.
 */
async function walkContext(
  dir: string,
  root: string,
  rules: IgnoreRules,
  maxBytes: number,
): Promise<{ entries: ContextEntry[]; skipped: string[] }> {
  const entries: ContextEntry[] = [];
  const skipped: string[] = [];
  let tarBytes = TAR_TRAILER;

  const visit = async (dirRel: string): Promise<void> => {
    const absDir = path.join(root, dirRel);
    const children = await readdir(absDir, { withFileTypes: true }).catch(
      (err: NodeJS.ErrnoException) => {
        throw fsError(`cannot read directory ${display(dirRel)} in build context ${dir}`, err);
      },
    );
    children.sort((a, b) => compareText(a.name, b.name));
    const subdirs: string[] = [];
    for (let i = 0; i < children.length; i += STAT_CONCURRENCY) {
      const batch = children.slice(i, i + STAT_CONCURRENCY);
      const found = await Promise.all(batch.map((child) => inspect(dirRel, child)));
      for (const item of found) {
        if (item === undefined) continue;
        if (item.walk) subdirs.push(item.rel);
        if (item.skipped) skipped.push(item.rel);
        if (item.entry === undefined) continue;
        entries.push(item.entry);
        tarBytes += BLOCK + (item.entry.kind === 'file' ? padded(item.entry.size) : 0);
        if (tarBytes > maxBytes) throw tooLarge(dir, maxBytes, tarBytes, entries);
      }
    }
    for (const sub of subdirs) await visit(sub);
  };

  const inspect = async (
    dirRel: string,
    child: Dirent,
  ): Promise<
    { rel: string; entry?: ContextEntry; walk?: boolean; skipped?: boolean } | undefined
  > => {
    const rel = dirRel === '' ? child.name : `${dirRel}/${child.name}`;
    const abs = path.join(root, rel);
    let info: Stats;
    try {
      info = await lstat(abs);
    } catch (err) {
      // Gone since readdir: like the Docker CLI, pack what is there.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fsError(`cannot read ${rel} in build context ${dir}`, err);
    }
    if (rules.excludes(rel)) {
      return info.isDirectory() && rules.hasExceptionUnder(rel) ? { rel, walk: true } : undefined;
    }
    const mode = info.mode & 0o7777;
    if (info.isDirectory()) return { rel, walk: true, entry: { kind: 'directory', rel, mode } };
    if (info.isFile()) return { rel, entry: { kind: 'file', rel, mode, size: info.size } };
    if (info.isSymbolicLink()) {
      const target = await readlink(abs).catch((err: unknown) => {
        throw fsError(`cannot read symlink ${rel} in build context ${dir}`, err);
      });
      await refuseEscapingLink(dir, root, rel, target);
      return { rel, entry: { kind: 'symlink', rel, mode, target } };
    }
    return { rel, skipped: true };
  };

  await visit('');
  entries.sort((a, b) => compareText(a.rel, b.rel));
  skipped.sort(compareText);
  return { entries, skipped };
}

/**
 * Refuses a symlink whose target is absolute or leaves the context, first
 * by its text and then, when the target exists, by where it really resolves
 * (a `..` after another in-context link can still climb out).
 */
async function refuseEscapingLink(
  dir: string,
  root: string,
  rel: string,
  target: string,
): Promise<void> {
  const refuse = () =>
    invalid(`symlink ${rel} in build context ${dir} points outside the context (to ${target})`);
  if (path.isAbsolute(target)) throw refuse();
  const lexical = path.posix.normalize(path.posix.join(path.posix.dirname(rel), target));
  if (lexical === '..' || lexical.startsWith('../')) throw refuse();
  const resolved = await realpath(path.join(root, rel)).catch(() => undefined);
  if (resolved === undefined) return; // dangling or a loop: nothing on disk it could expose
  const inside = path.relative(root, resolved);
  if (inside === '..' || inside.startsWith(`..${path.sep}`) || path.isAbsolute(inside)) {
    throw refuse();
  }
}

/** Streams the entries into `tarPath`, hashing and counting the bytes as they go. */
async function writeTar(
  dir: string,
  root: string,
  entries: readonly ContextEntry[],
  tarPath: string,
  maxBytes: number,
): Promise<{ sha256: string; bytes: number }> {
  const handle = await open(tarPath, 'wx', 0o600).catch((err: unknown) => {
    throw fsError(`cannot create the context tar ${tarPath}`, err);
  });
  const out = handle.createWriteStream();
  const pack = tar.pack();
  const hash = createHash('sha256');
  let bytes = 0;
  // The first error wins: later ones are only its echo through the streams.
  let failure: unknown;
  const fail = (err: unknown) => {
    failure ??= err;
    pack.destroy(err instanceof Error ? err : new Error(String(err)));
  };
  out.on('error', (err) => fail(fsError(`cannot write the context tar ${tarPath}`, err)));

  const consumer = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      if (bytes > maxBytes) {
        throw tooLarge(dir, maxBytes, bytes, entries);
      }
      hash.update(chunk);
      if (!out.write(chunk)) await drained(out);
    }
  })().catch(fail);

  for (const entry of entries) {
    if (failure !== undefined) break;
    await addEntry(pack, root, entry).catch((err: unknown) =>
      fail(entryError(dir, entry.rel, err)),
    );
  }
  if (failure === undefined) pack.finalize();
  await consumer;
  if (failure === undefined) out.end();
  else out.destroy();
  await finished(out).catch(() => undefined);
  await handle.close().catch(() => undefined);
  if (failure !== undefined) throw failure;
  return { sha256: hash.digest('hex'), bytes };
}

type EntryHeader = Partial<tar.Header> & { name: string };

/** Adds one entry; resolves once tar-stream has taken all of it. */
async function addEntry(pack: tar.Pack, root: string, entry: ContextEntry): Promise<void> {
  const header = {
    name: entry.kind === 'directory' ? `${entry.rel}/` : entry.rel,
    mode: entry.mode,
    mtime: CONTEXT_MTIME,
    uid: 0,
    gid: 0,
    uname: '',
    gname: '',
  };
  switch (entry.kind) {
    case 'directory':
      return emptyEntry(pack, { ...header, type: 'directory' });
    case 'symlink':
      return emptyEntry(pack, { ...header, type: 'symlink', linkname: entry.target });
    case 'file': {
      const fileHeader = { ...header, type: 'file' as const, size: entry.size };
      if (entry.size === 0) return emptyEntry(pack, fileHeader);
      // Opened before its header is written, so an unreadable file leaves no half entry.
      const source = await open(entry.source ?? path.join(root, entry.rel), 'r');
      try {
        await new Promise<void>((resolve, reject) => {
          const sink = pack.entry(fileHeader, (err) => (err ? reject(err) : resolve()));
          // Failures arrive through the callback; without a listener streamx would throw.
          sink.on('error', () => undefined);
          copyBytes(source, entry.size, sink).catch(reject);
        });
      } finally {
        await source.close();
      }
    }
  }
}

function emptyEntry(pack: tar.Pack, header: EntryHeader): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const sink = pack.entry(header, Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    sink.on('error', () => undefined);
  });
}

/** Copies exactly `size` bytes (the size the walk saw) into the tar entry. */
async function copyBytes(source: FileHandle, size: number, sink: ByteSink): Promise<void> {
  for await (const chunk of source.createReadStream({
    start: 0,
    end: size - 1,
    autoClose: false,
  })) {
    if (!sink.write(chunk)) await drained(sink);
  }
  sink.end();
}

/** What copying needs of a writable, Node's or streamx's (tar-stream's entries). */
interface ByteSink {
  readonly destroyed: boolean;
  readonly destroying?: boolean;
  write(chunk: Buffer): boolean;
  end(data?: unknown): unknown;
  once(event: 'drain' | 'close', listener: () => void): unknown;
  off(event: 'drain' | 'close', listener: () => void): unknown;
}

/** Resolves on 'drain'; rejects if the stream closes first. */
function drained(stream: ByteSink): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (stream.destroyed || stream.destroying === true) {
      reject(new Error('stream closed while waiting to write'));
      return;
    }
    const onDrain = () => {
      stream.off('close', onClose);
      resolve();
    };
    const onClose = () => {
      stream.off('drain', onDrain);
      reject(new Error('stream closed while waiting to write'));
    };
    stream.once('drain', onDrain);
    stream.once('close', onClose);
  });
}

/** The size refusal, naming the biggest file packed so far: the likeliest thing to exclude. */
function tooLarge(
  dir: string,
  maxBytes: number,
  bytes: number,
  entries: readonly ContextEntry[],
): BraidError {
  let largest: { rel: string; size: number } | undefined;
  for (const entry of entries) {
    if (entry.kind === 'file' && entry.size > (largest?.size ?? -1)) largest = entry;
  }
  const hint =
    largest === undefined ? '' : `; largest file ${largest.rel}, ${formatBytes(largest.size)}`;
  return invalid(
    `build context ${dir} is over the limit of ${formatBytes(maxBytes)} ` +
      `(at least ${formatBytes(bytes)}${hint}); exclude files in .dockerignore`,
  );
}

function entryError(dir: string, rel: string, err: unknown): BraidError {
  if (err instanceof BraidError) return err;
  if (err instanceof Error && err.message === 'Size mismatch') {
    return invalid(`${rel} in build context ${dir} changed while it was being packed`, err);
  }
  return fsError(`cannot read ${rel} in build context ${dir}`, err);
}

/** A filesystem error as one line: permissions are the user's to fix, the rest is ours. */
function fsError(what: string, err: unknown): BraidError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EACCES' || code === 'EPERM') {
    return invalid(`${what}: permission denied`, err);
  }
  if (code === 'ENOENT') return invalid(`${what}: it disappeared while packing`, err);
  const message = err instanceof Error ? err.message : String(err);
  return new BraidError('internal', `${what}: ${message}`, { cause: err });
}

function invalid(message: string, cause?: unknown): BraidError {
  return new UsageError(message, cause === undefined ? undefined : { cause });
}

async function exists(file: string): Promise<boolean> {
  return lstat(file).then(
    () => true,
    () => false,
  );
}

function display(rel: string): string {
  return rel === '' ? '.' : rel;
}

function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}
