/**
 * The arch guard: before a tag moves to a multi-arch index, check that each
 * platform's image carries binaries of the architecture it claims, so that a
 * mislabelled image fails here and not as an `exec format error` crash loop.
 *
 * What is checked, reading layer blobs as streams (only tar headers and the
 * first 64 bytes of executable files are kept; contents are drained):
 *
 * - The entrypoint: the file `docker run` would start (Entrypoint[0], else
 *   Cmd[0], searched on the image's PATH when it has no `/`), resolved
 *   through the union of the layers (whiteouts, opaque directories, symbolic
 *   links, hard links). A `#!` script is fine; its interpreter is checked
 *   when it is in the image. Layers are read top-down only as far as the
 *   resolution needs, and this read is not limited by the budget.
 * - The scan: in the `topLayers` topmost layers, every regular file (or hard
 *   link) with an execute bit that sits directly in a directory named `bin`
 *   or `sbin`, in a directory of the image's PATH, or in its WorkingDir, and
 *   that no higher layer replaces or deletes. Libraries are not scanned:
 *   multilib and cross-compilation images legitimately carry foreign ones.
 *   The scan stops once `budgetBytes` of uncompressed layer data are read.
 *
 * A match needs the ELF machine, class and byte order of the platform
 * exactly (an i386 binary in an amd64 image is a mismatch). The first
 * mismatch throws ArchMismatchError; what could not be checked is listed in
 * `skipped`.
 */
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { BraidError } from '../errors.js';
import {
  ELF_HEADER_BYTES,
  elfMatches,
  expectedElf,
  parseElfHeader,
  type ElfExpectation,
  type ElfHeader,
} from './elf.js';
import { ArchMismatchError } from './errors.js';
import {
  TarHeaderSink,
  type HeadReceiver,
  type TarEntry,
  type TarEntryType,
} from './tar-headers.js';

export interface ArchCheckInput {
  platform: { os: string; architecture: string; variant?: string };
  /** The platform as the user reads it, e.g. "linux/arm64"; used in messages. */
  platformText: string;
  /** The image config JSON. */
  config: {
    config?: {
      Entrypoint?: string[] | null;
      Cmd?: string[] | null;
      WorkingDir?: string;
      Env?: string[] | null;
    };
  };
  /** Layer descriptors in manifest order, bottom first. */
  layers: { digest: string; mediaType: string; size: number }[];
  /** The layer blob (gzip-compressed or plain tar) as a stream. */
  openLayer(digest: string): Promise<NodeJS.ReadableStream>;
  /** Uncompressed layer bytes the scan of the top layers may read; default 64 MiB. */
  budgetBytes?: number;
  /** How many topmost layers to scan for ELF files; default 2. */
  topLayers?: number;
}

export interface CheckedFile {
  path: string;
  description: string;
}

export interface ArchCheckEntrypoint {
  /** As the config names it: `/bin/sh`, `sh`, `./server`. */
  path: string;
  /** The file it resolves to in the image, symbolic links followed. */
  resolved: string;
  /** The ELF description, `script (#!/bin/sh)`, or absent when not examinable. */
  description?: string;
  /** For a `#!` script: the interpreter as named on the `#!` line and where it resolves. */
  interpreter?: { path: string; resolved: string; description?: string };
}

export interface ArchCheckResult {
  platform: string;
  /** ELF files examined, all of the expected architecture. */
  checked: CheckedFile[];
  entrypoint?: ArchCheckEntrypoint;
  /** Why something was not checked, one line each. */
  skipped: string[];
}

export const DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024;
export const DEFAULT_TOP_LAYERS = 2;
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const MAX_SYMLINK_HOPS = 40; // Linux's MAXSYMLINKS
const MAX_HARDLINK_HOPS = 8;
const MAX_INTERPRETER_DEPTH = 4; // Linux's BINPRM recursion limit
const EXECUTE_BITS = 0o111;
const OPAQUE_WHITEOUT = '.wh..wh..opq';
const WHITEOUT_PREFIX = '.wh.';
const WHITEOUT_META_PREFIX = '.wh..wh.';
const SCAN_DIR_NAMES = new Set(['bin', 'sbin']);
/** zlib's default 16 KiB output chunks cost a thread-pool round trip each; gains flatten out here. */
const GUNZIP_CHUNK_BYTES = 256 * 1024;

/**
 * Check the image of one platform; resolves with what was checked, or
 * rejects with ArchMismatchError on the first binary of another
 * architecture, or with the error of a layer stream.
 */
export async function checkImageArchitecture(input: ArchCheckInput): Promise<ArchCheckResult> {
  const result: ArchCheckResult = { platform: input.platformText, checked: [], skipped: [] };
  const expected = expectedElf(input.platform);
  if (!expected) {
    result.skipped.push(`no ELF architecture is known for ${input.platformText}`);
    return result;
  }
  const guard = new ArchGuard(input, expected, result);
  await guard.scanTopLayers();
  await guard.checkEntrypoint();
  if (result.checked.length === 0) {
    guard.skip(`no ELF files found in the entrypoint or the top ${guard.topLayers} layer(s)`);
  }
  return result;
}

// ---------------------------------------------------------------------------
// The union of the layers, as far as it has been read.

type NodeType = TarEntryType;

interface FsNode {
  type: NodeType;
  mode: number;
  size: number;
  /** Symbolic link target as written, or hard link target as an archive path. */
  linkname?: string;
  /** Up to ELF_HEADER_BYTES leading bytes, kept for executable regular files only. */
  head?: Buffer;
}

type LayerState = 'unread' | 'partial' | 'complete' | 'uncheckable';

interface Layer {
  digest: string;
  mediaType: string;
  state: LayerState;
  /** Why an uncheckable layer is so. */
  reason?: string;
  /** Archive paths without leading `/`, e.g. `usr/bin/env`. */
  entries: Map<string, FsNode>;
  /** Directories that hold entries of this layer but have no entry of their own. */
  impliedDirs: Set<string>;
  whiteouts: Set<string>;
  opaqueDirs: Set<string>;
}

const IMPLIED_DIR: FsNode = { type: 'dir', mode: 0o755, size: 0 };

interface Found {
  kind: 'found';
  /** Archive path of the name that was looked up (hard links keep their own name). */
  path: string;
  node: FsNode;
  layer: number;
}
interface Missing {
  kind: 'missing';
  reason: string;
}
/** The answer depends on a layer that is not (fully) read yet. */
interface Blocked {
  kind: 'blocked';
  layer: number;
}

type Examined =
  | { kind: 'elf'; header: ElfHeader }
  | { kind: 'script'; interpreter: string }
  | { kind: 'opaque'; reason: string };

interface EntrypointFindings {
  kind: 'findings';
  entrypoint?: ArchCheckEntrypoint;
  elfFiles: { path: string; header: ElfHeader }[];
  reasons: string[];
}

/** The budget of the scan is spent; not an error of the layer. */
class BudgetReached extends Error {}

class ArchGuard {
  readonly topLayers: number;
  private readonly layers: Layer[];
  private readonly budgetBytes: number;
  private readonly workingDir: string;
  private readonly searchPath: string[];
  private readonly scanDirs: Set<string>;
  private readonly checkedPaths = new Set<string>();

  constructor(
    private readonly input: ArchCheckInput,
    private readonly expected: ElfExpectation,
    private readonly result: ArchCheckResult,
  ) {
    this.layers = input.layers.map((d) => ({
      digest: d.digest,
      mediaType: d.mediaType,
      state: 'unread',
      entries: new Map(),
      impliedDirs: new Set(),
      whiteouts: new Set(),
      opaqueDirs: new Set(),
    }));
    this.topLayers = Math.min(
      this.layers.length,
      Math.max(0, Math.floor(input.topLayers ?? DEFAULT_TOP_LAYERS)),
    );
    this.budgetBytes = Math.max(0, input.budgetBytes ?? DEFAULT_BUDGET_BYTES);
    const config = input.config.config ?? {};
    this.workingDir = config.WorkingDir || '/';
    const pathValue =
      (config.Env ?? [])
        .filter((e) => e.startsWith('PATH='))
        .map((e) => e.slice('PATH='.length))
        .pop() ?? DEFAULT_PATH;
    this.searchPath = pathValue.split(':');
    this.scanDirs = new Set(
      [...this.searchPath, this.workingDir]
        .filter((dir) => dir.startsWith('/'))
        .map((dir) => archivePath(dir) ?? ''),
    );
  }

  skip(reason: string): void {
    if (!this.result.skipped.includes(reason)) this.result.skipped.push(reason);
  }

  /** Scan the topmost layers, top-down, within the budget. */
  async scanTopLayers(): Promise<void> {
    let budgetLeft = this.budgetBytes;
    for (let k = 0; k < this.topLayers; k++) {
      const index = this.layers.length - 1 - k;
      const layer = this.layers[index]!;
      if (budgetLeft <= 0) {
        this.skip(
          `scan budget of ${this.budgetBytes} bytes reached before layer ${layer.digest}; ` +
            'it and the layers below it were not scanned',
        );
        return;
      }
      budgetLeft -= await this.read(index, budgetLeft);
      if (layer.state === 'uncheckable') {
        // A layer we cannot read may delete or replace anything below it.
        this.skip(`${layer.reason}; it and the layers below it were not scanned`);
        return;
      }
      this.scanLayer(index);
      if (layer.state === 'partial') {
        this.skip(
          `scan budget of ${this.budgetBytes} bytes reached in layer ${layer.digest}; ` +
            'the rest of it and the layers below it were not scanned',
        );
        return;
      }
    }
  }

  /** Resolve and check the entrypoint, reading lower layers as the resolution needs them. */
  async checkEntrypoint(): Promise<void> {
    // Every round either answers or reads one more layer fully, so rounds are bounded.
    for (let round = 0; round <= this.layers.length; round++) {
      const findings = this.findEntrypoint();
      if (findings.kind === 'findings') {
        if (findings.entrypoint) this.result.entrypoint = findings.entrypoint;
        for (const file of findings.elfFiles) this.verify(file.path, file.header);
        for (const reason of findings.reasons) this.skip(reason);
        return;
      }
      const layer = this.layers[findings.layer]!;
      if (layer.state === 'uncheckable') {
        this.skip(`entrypoint not checked: ${layer.reason}`);
        return;
      }
      await this.read(findings.layer);
    }
    throw new BraidError('internal', 'arch guard: entrypoint resolution did not settle');
  }

  private verify(path: string, header: ElfHeader): void {
    if (!elfMatches(header, this.expected)) {
      throw new ArchMismatchError(this.input.platformText, path, header.description);
    }
    if (this.checkedPaths.has(path)) return;
    this.checkedPaths.add(path);
    this.result.checked.push({ path, description: header.description });
  }

  private scanLayer(index: number): void {
    const layer = this.layers[index]!;
    for (const [path, node] of layer.entries) {
      if (!this.inScanScope(path, node) || this.shadowedAbove(path, index)) continue;
      const target =
        node.type === 'link' ? layer.entries.get(archivePath(node.linkname ?? '') ?? '') : node;
      const head = target?.type === 'file' ? completeHead(target) : undefined;
      const header = head && parseElfHeader(head);
      if (header) this.verify(`/${path}`, header);
    }
  }

  private inScanScope(path: string, node: FsNode): boolean {
    if (node.type !== 'file' && node.type !== 'link') return false;
    if ((node.mode & EXECUTE_BITS) === 0) return false;
    const dir = parentOf(path);
    return SCAN_DIR_NAMES.has(dir.slice(dir.lastIndexOf('/') + 1)) || this.scanDirs.has(dir);
  }

  /** Whether a layer above `index` replaces, deletes or hides `path` (those layers are read). */
  private shadowedAbove(path: string, index: number): boolean {
    for (let i = this.layers.length - 1; i > index; i--) {
      const layer = this.layers[i]!;
      if (
        layer.entries.has(path) ||
        layer.impliedDirs.has(path) ||
        layer.whiteouts.has(path) ||
        hidesLower(layer, path)
      ) {
        return true;
      }
    }
    return false;
  }

  // -------------------------------------------------------------------------
  // Resolution over the layers read so far; Blocked asks for one more layer.

  private findEntrypoint(): EntrypointFindings | Blocked {
    const config = this.input.config.config ?? {};
    const argv0 = config.Entrypoint?.[0] ?? config.Cmd?.[0];
    const findings: EntrypointFindings = { kind: 'findings', elfFiles: [], reasons: [] };
    if (!argv0) {
      findings.reasons.push('the image has neither Entrypoint nor Cmd');
      return findings;
    }
    const executable = this.findExecutable(argv0);
    if (executable.kind === 'blocked') return executable;
    if (executable.kind === 'missing') {
      findings.reasons.push(`entrypoint ${argv0} not checked: ${executable.reason}`);
      return findings;
    }
    const entrypoint: ArchCheckEntrypoint = { path: argv0, resolved: `/${executable.path}` };
    findings.entrypoint = entrypoint;

    let file = executable;
    // Where the description of `file` goes: the entrypoint, its interpreter, or nowhere deeper.
    let subject: { description?: string } | undefined = entrypoint;
    for (let depth = 0; ; depth++) {
      const examined = this.examine(file);
      if (examined.kind === 'blocked') return examined;
      if (examined.kind === 'opaque') {
        findings.reasons.push(`entrypoint ${argv0}: /${file.path} ${examined.reason}`);
        return findings;
      }
      if (examined.kind === 'elf') {
        if (subject) subject.description = examined.header.description;
        findings.elfFiles.push({ path: `/${file.path}`, header: examined.header });
        return findings;
      }
      if (subject) subject.description = `script (#!${examined.interpreter})`;
      if (depth >= MAX_INTERPRETER_DEPTH) {
        findings.reasons.push(`entrypoint ${argv0}: interpreters nest too deeply`);
        return findings;
      }
      const interpreter = this.resolve(this.absolute(examined.interpreter));
      if (interpreter.kind === 'blocked') return interpreter;
      if (interpreter.kind === 'missing') {
        findings.reasons.push(
          `interpreter ${examined.interpreter} of /${file.path} is not in the image (${interpreter.reason})`,
        );
        return findings;
      }
      if (depth === 0) {
        entrypoint.interpreter = { path: examined.interpreter, resolved: `/${interpreter.path}` };
        subject = entrypoint.interpreter;
      } else {
        subject = undefined;
      }
      file = interpreter;
    }
  }

  /** What `docker run` starts for `argv0`: a path, or a name searched on PATH. */
  private findExecutable(argv0: string): Found | Missing | Blocked {
    if (argv0.includes('/')) return this.resolve(this.absolute(argv0));
    for (const dir of this.searchPath) {
      const candidate = this.resolve(`${this.absolute(dir || '.')}/${argv0}`);
      if (candidate.kind === 'blocked') return candidate;
      if (candidate.kind === 'found' && isExecutableFile(candidate.node)) return candidate;
    }
    return { kind: 'missing', reason: `not found in PATH ${this.searchPath.join(':')}` };
  }

  private absolute(path: string): string {
    return path.startsWith('/') ? path : `${this.workingDir}/${path}`;
  }

  /** Follow `path` through the union like the kernel does: symbolic links, `..`, whiteouts. */
  private resolve(path: string): Found | Missing | Blocked {
    const pending = path.split('/');
    const done: string[] = [];
    let last: Found | undefined;
    let hops = 0;
    while (pending.length > 0) {
      const name = pending.shift()!;
      if (name === '' || name === '.') continue;
      if (name === '..') {
        done.pop();
        last = undefined;
        continue;
      }
      const candidate = [...done, name].join('/');
      const found = this.lookup(candidate);
      if (found.kind === 'blocked') return found;
      if (found.kind === 'missing')
        return { kind: 'missing', reason: `/${candidate} does not exist` };
      if (found.node.type === 'symlink') {
        const target = found.node.linkname ?? '';
        if (++hops > MAX_SYMLINK_HOPS || target === '') {
          return { kind: 'missing', reason: `/${candidate} is a broken or looping symbolic link` };
        }
        if (target.startsWith('/')) done.length = 0;
        pending.unshift(...target.split('/'));
        last = undefined;
        continue;
      }
      if (pending.some((c) => c !== '' && c !== '.') && found.node.type !== 'dir') {
        return { kind: 'missing', reason: `/${candidate} is not a directory` };
      }
      done.push(name);
      last = found;
    }
    if (last) return last;
    if (done.length === 0) return { kind: 'found', path: '', node: IMPLIED_DIR, layer: -1 };
    return this.lookup(done.join('/'));
  }

  /** The topmost visible entry at exactly `path`, looking at layers `from` and below. */
  private lookup(path: string, from = this.layers.length - 1): Found | Missing | Blocked {
    for (let i = from; i >= 0; i--) {
      const layer = this.layers[i]!;
      if (layer.state !== 'complete') return { kind: 'blocked', layer: i };
      const node =
        layer.entries.get(path) ?? (layer.impliedDirs.has(path) ? IMPLIED_DIR : undefined);
      if (node) return { kind: 'found', path, node, layer: i };
      if (layer.whiteouts.has(path) || hidesLower(layer, path)) break;
    }
    return { kind: 'missing', reason: `/${path} does not exist` };
  }

  /** The file behind a hard link: its target in the same or a lower layer. */
  private followHardLinks(found: Found): Found | Missing | Blocked {
    let current = found;
    for (let hop = 0; current.node.type === 'link'; hop++) {
      const target = archivePath(current.node.linkname ?? '');
      if (hop >= MAX_HARDLINK_HOPS || target === undefined) {
        return { kind: 'missing', reason: 'is a broken hard link' };
      }
      const next = this.lookup(target, current.layer);
      if (next.kind !== 'found') {
        return next.kind === 'blocked'
          ? next
          : { kind: 'missing', reason: `is a hard link to /${target}, which does not exist` };
      }
      current = next;
    }
    return { ...current, path: found.path };
  }

  private examine(found: Found): Examined | Blocked {
    const file = this.followHardLinks(found);
    if (file.kind === 'blocked') return file;
    if (file.kind === 'missing') return { kind: 'opaque', reason: file.reason };
    const { node } = file;
    if (node.type === 'dir') return { kind: 'opaque', reason: 'is a directory' };
    if (node.type !== 'file') return { kind: 'opaque', reason: 'is not a regular file' };
    if ((found.node.mode & EXECUTE_BITS) === 0 && (node.mode & EXECUTE_BITS) === 0) {
      return { kind: 'opaque', reason: 'is not executable' };
    }
    if (node.size === 0) return { kind: 'opaque', reason: 'is empty' };
    const head = completeHead(node);
    if (!head) return { kind: 'opaque', reason: 'could not be read' };
    if (head[0] === 0x23 && head[1] === 0x21) {
      const interpreter = shebangInterpreter(head, node.size);
      return interpreter
        ? { kind: 'script', interpreter }
        : { kind: 'opaque', reason: 'has a #! line too long to read or without interpreter' };
    }
    const header = parseElfHeader(head);
    if (header) return { kind: 'elf', header };
    return { kind: 'opaque', reason: 'is neither an ELF binary nor a #! script' };
  }

  // -------------------------------------------------------------------------
  // Reading a layer blob: sniff compression, gunzip, parse tar, drain contents.

  /**
   * Read layer `index` into the union, replacing what was read of it before.
   * With `limitBytes`, stop (destroying the streams) after that many
   * uncompressed bytes and leave the layer `partial`. Returns the bytes read.
   */
  private async read(index: number, limitBytes = Infinity): Promise<number> {
    const layer = this.layers[index]!;
    layer.entries.clear();
    layer.impliedDirs.clear();
    layer.whiteouts.clear();
    layer.opaqueDirs.clear();
    if (/zstd/i.test(layer.mediaType)) {
      markUncheckable(layer);
      return 0;
    }
    let source: Readable;
    try {
      source = asReadable(await this.input.openLayer(layer.digest));
    } catch (err) {
      throw layerError(layer, err);
    }
    const counter = new ByteCounter(limitBytes);
    try {
      const magic = await peek(source, 4);
      if (isZstd(magic)) {
        source.destroy();
        markUncheckable(layer);
        return 0;
      }
      const entries = new TarHeaderSink(ELF_HEADER_BYTES, (entry) => readEntry(layer, entry));
      const gunzip = isGzip(magic) ? [createGunzip({ chunkSize: GUNZIP_CHUNK_BYTES })] : [];
      await pipeline([source, ...gunzip, counter, entries]);
      layer.state = 'complete';
    } catch (err) {
      source.destroy();
      if (!(err instanceof BudgetReached)) throw layerError(layer, err);
      layer.state = 'partial';
    }
    return counter.bytes;
  }
}

/** Records an entry; asks for the head of executable regular files, for the ELF check. */
function readEntry(layer: Layer, entry: TarEntry): HeadReceiver | undefined {
  const node = recordEntry(layer, entry);
  if (!node || node.type !== 'file' || node.size === 0 || !isExecutableFile(node)) return undefined;
  return (head) => {
    node.head = head;
  };
}

function recordEntry(layer: Layer, entry: TarEntry): FsNode | undefined {
  const path = archivePath(entry.name);
  if (path === undefined) return undefined;
  const dir = parentOf(path);
  const name = path.slice(path.lastIndexOf('/') + 1);
  for (let d = dir; d !== '' && !layer.impliedDirs.has(d); d = parentOf(d)) {
    layer.impliedDirs.add(d);
  }
  if (name === OPAQUE_WHITEOUT) {
    layer.opaqueDirs.add(dir);
    return undefined;
  }
  if (name.startsWith(WHITEOUT_META_PREFIX)) return undefined;
  if (name.startsWith(WHITEOUT_PREFIX)) {
    const deleted = name.slice(WHITEOUT_PREFIX.length);
    layer.whiteouts.add(dir === '' ? deleted : `${dir}/${deleted}`);
    return undefined;
  }
  const { type, mode, size, linkname } = entry;
  const node: FsNode = { type, mode, size };
  if ((type === 'symlink' || type === 'link') && linkname) node.linkname = linkname;
  layer.entries.set(path, node);
  return node;
}

/** Whether a layer hides lower entries at `path`: an ancestor deleted, opaque or not a directory. */
function hidesLower(layer: Layer, path: string): boolean {
  if (layer.opaqueDirs.has('')) return true;
  for (let cut = path.indexOf('/'); cut >= 0; cut = path.indexOf('/', cut + 1)) {
    const ancestor = path.slice(0, cut);
    if (layer.opaqueDirs.has(ancestor) || layer.whiteouts.has(ancestor)) return true;
    const node = layer.entries.get(ancestor);
    if (node && node.type !== 'dir') return true;
  }
  return false;
}

/** `./usr//bin/` -> `usr/bin`; undefined for the root and for names that climb with `..`. */
function archivePath(name: string): string | undefined {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..')) return undefined;
  return parts.join('/');
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

function isExecutableFile(node: FsNode): boolean {
  return (node.type === 'file' || node.type === 'link') && (node.mode & EXECUTE_BITS) !== 0;
}

/** The kept head of a file, if it holds all the bytes the ELF check needs. */
function completeHead(node: FsNode): Buffer | undefined {
  const head = node.head;
  return head && head.length >= Math.min(ELF_HEADER_BYTES, node.size) ? head : undefined;
}

/** The interpreter of a `#!` line, if the line is readable within the head. */
function shebangInterpreter(head: Buffer, size: number): string | undefined {
  const text = head.subarray(2).toString('latin1');
  const newline = text.indexOf('\n');
  if (newline < 0 && head.length < size) return undefined;
  const line = (newline < 0 ? text : text.slice(0, newline)).trim();
  return line.split(/[ \t]/)[0] || undefined;
}

function markUncheckable(layer: Layer): void {
  layer.state = 'uncheckable';
  layer.reason = `layer ${layer.digest} is zstd-compressed, which the arch guard cannot read`;
}

function isGzip(magic: Buffer): boolean {
  return magic[0] === 0x1f && magic[1] === 0x8b;
}

function isZstd(magic: Buffer): boolean {
  return magic.length >= 4 && magic.readUInt32LE(0) === 0xfd2fb528;
}

function layerError(layer: Layer, err: unknown): BraidError {
  if (err instanceof BraidError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new BraidError('unavailable', `arch guard: reading layer ${layer.digest}: ${message}`, {
    cause: err,
  });
}

/** Passes bytes through until `limit`, then fails with BudgetReached. */
class ByteCounter extends Transform {
  bytes = 0;
  private readonly limit: number;

  constructor(limit: number) {
    super();
    this.limit = limit;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const room = this.limit - this.bytes;
    if (chunk.length <= room) {
      this.bytes += chunk.length;
      done(null, chunk);
      return;
    }
    this.bytes += room;
    if (room > 0) this.push(chunk.subarray(0, room));
    done(new BudgetReached());
  }
}

function asReadable(stream: NodeJS.ReadableStream): Readable {
  if (stream instanceof Readable) return stream;
  const wrapped = new Readable().wrap(stream);
  // Destroying the wrapper must release the stream it wraps (a socket, a request).
  wrapped.once('close', () => (stream as { destroy?: () => void }).destroy?.());
  return wrapped;
}

/** Up to `n` leading bytes of `source`, left in the stream for whoever reads it next. */
function peek(source: Readable, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (source.destroyed) {
      reject(source.errored ?? new Error('the layer stream was closed before it was read'));
      return;
    }
    const settle = (): void => {
      source.off('readable', onReadable);
      source.off('end', onEnd);
      source.off('error', onError);
      source.off('close', onClose);
    };
    const onReadable = (): void => {
      const bytes = source.read(n) as Buffer | null;
      if (bytes === null) return;
      settle();
      source.unshift(bytes);
      resolve(bytes);
    };
    const onEnd = (): void => {
      settle();
      resolve(Buffer.alloc(0));
    };
    const onError = (err: Error): void => {
      settle();
      reject(err);
    };
    const onClose = (): void => {
      settle();
      reject(new Error('the layer stream closed before it ended'));
    };
    source.on('readable', onReadable);
    source.on('end', onEnd);
    source.on('error', onError);
    source.on('close', onClose);
  });
}
