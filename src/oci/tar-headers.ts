/**
 * A streaming reader of tar headers: it hands out each entry's header and, on
 * request, the first few bytes of its content, and skips everything else by
 * size, so reading a layer costs little more than gunzipping it.
 *
 * It reads an archive the way Go's archive/tar does, because that is what
 * applies the layers (containerd, dockerd): an archive that the runtime
 * unpacks into other files than the guard sees would let a mislabelled
 * binary through. Hence: the archive ends at two zero blocks; link,
 * directory and device entries carry no content whatever their size says;
 * a GNU long name wins over a pax path; pax global headers ('g') are checked
 * but not applied; checksums, sizes and pax records that Go refuses are
 * errors here too. GNU sparse files are read as plain files, so their names
 * and heads may differ from what the runtime unpacks.
 */
import { Writable } from 'node:stream';

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'link' | 'other';

export interface TarEntry {
  /** As in the archive, after pax and GNU long names, e.g. `./usr/bin/env`. */
  name: string;
  type: TarEntryType;
  mode: number;
  /** Content bytes that follow the header; 0 for types that carry none. */
  size: number;
  /** Target of a link; empty for other entries. */
  linkname: string;
}

/** Receives the first bytes of an entry's content, once all of them have arrived. */
export type HeadReceiver = (head: Buffer) => void;

/** Called for each entry; returning a receiver asks for the entry's first bytes. */
export type EntryListener = (entry: TarEntry) => HeadReceiver | undefined;

/** The archive is not a tar archive, is corrupt, or ends early. */
export class TarFormatError extends Error {
  override name = 'TarFormatError';
}

const BLOCK_BYTES = 512;
/** Go's limit for pax headers and GNU long names, which must be held whole. */
export const MAX_EXTENSION_BYTES = 1024 * 1024;

const TYPE_REGULAR_OLD = 0; // '\0'
const TYPE_REGULAR = 0x30; // '0'
const TYPE_LINK = 0x31; // '1'
const TYPE_SYMLINK = 0x32; // '2'
const TYPE_DIR = 0x35; // '5'
const TYPE_FIFO = 0x36; // '6'
const TYPE_CONTIGUOUS = 0x37; // '7'
const TYPE_PAX = 0x78; // 'x'
const TYPE_PAX_GLOBAL = 0x67; // 'g'
const TYPE_GNU_LONG_NAME = 0x4c; // 'L'
const TYPE_GNU_LONG_LINK = 0x4b; // 'K'
/** Headers whose content describes the next entry. */
const EXTENSION_TYPES = new Set([
  TYPE_PAX,
  TYPE_PAX_GLOBAL,
  TYPE_GNU_LONG_NAME,
  TYPE_GNU_LONG_LINK,
]);

type Format = 'v7' | 'ustar' | 'star' | 'gnu';

/** The records of a pax header that name, link or size the next entry. */
interface PaxFields {
  path?: string;
  linkpath?: string;
  size?: number;
}

/** The extended headers read so far, for the next entry. */
interface Pending {
  pax: PaxFields;
  longName?: string;
  longLink?: string;
}

interface Head {
  bytes: Buffer;
  filled: number;
  receiver: HeadReceiver;
}

type Phase =
  | { kind: 'header'; afterZeroBlock: boolean }
  | { kind: 'extension'; typeflag: number; data: Buffer; filled: number }
  /** Content and padding of an entry; `left` counts both. */
  | { kind: 'content'; left: number; head?: Head }
  | { kind: 'end' };

/**
 * Parses a tar archive fed in chunks of any size. Holds one header block,
 * the head being collected and at most one extended header.
 */
export class TarHeaderParser {
  private phase: Phase = { kind: 'header', afterZeroBlock: false };
  private pending: Pending = { pax: {} };
  /** A header split across chunks, gathered here. */
  private readonly block = Buffer.alloc(BLOCK_BYTES);
  private blockFill = 0;
  /** Archive offset of the current header, for messages. */
  private headerAt = 0;
  private consumed = 0;

  constructor(
    private readonly headBytes: number,
    private readonly onEntry: EntryListener,
  ) {}

  /** Throws TarFormatError on a corrupt archive. */
  write(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      const next = this.step(chunk, at);
      this.consumed += next - at;
      at = next;
    }
  }

  /** The input ended; throws TarFormatError if it ended inside an entry. */
  end(): void {
    const phase = this.phase;
    if (phase.kind === 'end') return;
    if (phase.kind === 'header' && this.blockFill === 0) return;
    const where =
      phase.kind === 'header'
        ? 'a header'
        : phase.kind === 'extension'
          ? 'an extended header'
          : 'the content of an entry';
    throw new TarFormatError(`the tar archive is truncated: it ends inside ${where}`);
  }

  private step(chunk: Buffer, at: number): number {
    const phase = this.phase;
    switch (phase.kind) {
      case 'header':
        return this.gatherHeader(chunk, at);
      case 'extension':
        return this.gatherExtension(phase, chunk, at);
      case 'content':
        return this.skipContent(phase, chunk, at);
      case 'end':
        return chunk.length;
    }
  }

  private gatherHeader(chunk: Buffer, at: number): number {
    if (this.blockFill === 0) {
      this.headerAt = this.consumed;
      if (chunk.length - at >= BLOCK_BYTES) {
        this.header(chunk.subarray(at, at + BLOCK_BYTES));
        return at + BLOCK_BYTES;
      }
    }
    const n = Math.min(BLOCK_BYTES - this.blockFill, chunk.length - at);
    chunk.copy(this.block, this.blockFill, at, at + n);
    this.blockFill += n;
    if (this.blockFill === BLOCK_BYTES) {
      this.blockFill = 0;
      this.header(this.block);
    }
    return at + n;
  }

  private gatherExtension(
    phase: Extract<Phase, { kind: 'extension' }>,
    chunk: Buffer,
    at: number,
  ): number {
    const n = Math.min(phase.data.length - phase.filled, chunk.length - at);
    chunk.copy(phase.data, phase.filled, at, at + n);
    phase.filled += n;
    if (phase.filled === phase.data.length) this.extension(phase.typeflag, phase.data);
    return at + n;
  }

  private skipContent(
    phase: Extract<Phase, { kind: 'content' }>,
    chunk: Buffer,
    at: number,
  ): number {
    const n = Math.min(phase.left, chunk.length - at);
    const head = phase.head;
    if (head) {
      const copied = chunk.copy(head.bytes, head.filled, at, at + n);
      head.filled += copied;
      if (head.filled === head.bytes.length) {
        phase.head = undefined;
        head.receiver(head.bytes);
      }
    }
    phase.left -= n;
    if (phase.left === 0) this.phase = { kind: 'header', afterZeroBlock: false };
    return at + n;
  }

  private header(block: Buffer): void {
    const afterZeroBlock = this.phase.kind === 'header' && this.phase.afterZeroBlock;
    if (isZeroBlock(block)) {
      this.phase = afterZeroBlock ? { kind: 'end' } : { kind: 'header', afterZeroBlock: true };
      return;
    }
    if (afterZeroBlock) throw this.error('a zero block is followed by a header');
    const format = this.format(block);
    const typeflag = block[156]!;
    const size = this.number(block, 124, 12, 'size');
    const mode = this.number(block, 100, 8, 'mode');
    if (size < 0 && !carriesNoContent(typeflag)) throw this.error(`negative size ${size}`);
    if (!EXTENSION_TYPES.has(typeflag)) {
      this.entry(block, format, typeflag, size, mode);
      return;
    }
    if (size > MAX_EXTENSION_BYTES) {
      throw this.error(`extended header of ${size} bytes, over ${MAX_EXTENSION_BYTES}`);
    }
    const data = Buffer.alloc(size);
    if (size === 0) this.extension(typeflag, data);
    else this.phase = { kind: 'extension', typeflag, data, filled: 0 };
  }

  /** Validates the checksum (unsigned or signed, as Go accepts) and tells the format. */
  private format(block: Buffer): Format {
    const recorded = parseOctal(block, 148, 8);
    const [unsigned, signed] = checksums(block);
    if (recorded !== unsigned && recorded !== signed) {
      throw this.error('checksum mismatch (a corrupt archive, or not a tar archive)');
    }
    const magic = block.toString('latin1', 257, 263);
    if (magic === 'ustar\0') {
      return block.toString('latin1', 508, 512) === 'tar\0' ? 'star' : 'ustar';
    }
    if (magic === 'ustar ' && block[263] === 0x20 && block[264] === 0) return 'gnu';
    return 'v7';
  }

  private entry(
    block: Buffer,
    format: Format,
    typeflag: number,
    rawSize: number,
    mode: number,
  ): void {
    const { pax, longName, longLink } = this.pending;
    this.pending = { pax: {} };
    // Go's order: header fields, then pax records, then GNU long names.
    const name = longName || pax.path || prefixOf(block, format) + cString(block, 0, 100);
    const linkname = longLink || pax.linkpath || cString(block, 157, 100);
    const type = typeflag === TYPE_REGULAR_OLD && name.endsWith('/') ? 'dir' : entryType(typeflag);
    const size = type === 'dir' || carriesNoContent(typeflag) ? 0 : (pax.size ?? rawSize);
    if (size < 0) throw this.error(`negative size ${size}`);
    const receiver = this.onEntry({ name, type, mode, size, linkname });
    const head =
      receiver && size > 0
        ? { bytes: Buffer.alloc(Math.min(this.headBytes, size)), filled: 0, receiver }
        : undefined;
    this.skip(size + padding(size), head);
  }

  private extension(typeflag: number, data: Buffer): void {
    switch (typeflag) {
      case TYPE_PAX:
        this.pending.pax = this.pax(data);
        break;
      case TYPE_PAX_GLOBAL:
        // Go hands a global header out as an entry of its own, forgetting what came before it.
        this.pax(data);
        this.pending = { pax: {} };
        break;
      case TYPE_GNU_LONG_NAME:
        this.pending.longName = cString(data, 0, data.length);
        break;
      case TYPE_GNU_LONG_LINK:
        this.pending.longLink = cString(data, 0, data.length);
        break;
    }
    this.skip(padding(data.length));
  }

  /** Moves past `left` bytes of content and padding. */
  private skip(left: number, head?: Head): void {
    this.phase =
      left === 0 ? { kind: 'header', afterZeroBlock: false } : { kind: 'content', left, head };
  }

  private pax(data: Buffer): PaxFields {
    const found: PaxFields = {};
    for (let at = 0; at < data.length;) {
      const record = paxRecord(data, at);
      if (!record) throw this.error(`malformed pax record at byte ${at} of the extended header`);
      at = record.next;
      // An empty value keeps the header's own field, as in Go.
      if (record.value === '') continue;
      if (record.key === 'path') found.path = record.value;
      else if (record.key === 'linkpath') found.linkpath = record.value;
      else if (record.key === 'size') {
        const size = parseDecimal(record.value);
        if (size === undefined)
          throw this.error(`invalid pax size ${JSON.stringify(record.value)}`);
        found.size = size;
      }
    }
    return found;
  }

  private number(block: Buffer, offset: number, length: number, field: string): number {
    const value = parseNumeric(block, offset, length);
    if (value === undefined) throw this.error(`invalid ${field} field`);
    return value;
  }

  private error(problem: string): TarFormatError {
    return new TarFormatError(`invalid tar header at byte ${this.headerAt}: ${problem}`);
  }
}

/** A TarHeaderParser at the end of a pipeline. */
export class TarHeaderSink extends Writable {
  private readonly parser: TarHeaderParser;

  constructor(headBytes: number, onEntry: EntryListener) {
    super();
    this.parser = new TarHeaderParser(headBytes, onEntry);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error) => void): void {
    try {
      this.parser.write(chunk);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _final(done: (err?: Error) => void): void {
    try {
      this.parser.end();
      done();
    } catch (err) {
      done(err as Error);
    }
  }
}

function entryType(typeflag: number): TarEntryType {
  switch (typeflag) {
    case TYPE_REGULAR_OLD:
    case TYPE_REGULAR:
    case TYPE_CONTIGUOUS:
      return 'file';
    case TYPE_DIR:
      return 'dir';
    case TYPE_SYMLINK:
      return 'symlink';
    case TYPE_LINK:
      return 'link';
    default:
      return 'other';
  }
}

/** Links, devices, directories and fifos: Go reads no content for them, whatever the size says. */
export function carriesNoContent(typeflag: number): boolean {
  return typeflag >= TYPE_LINK && typeflag <= TYPE_FIFO;
}

function padding(size: number): number {
  return (BLOCK_BYTES - (size % BLOCK_BYTES)) % BLOCK_BYTES;
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < BLOCK_BYTES; i++) if (block[i] !== 0) return false;
  return true;
}

/** The header checksum with the checksum field read as spaces, over unsigned and signed bytes. */
export function checksums(block: Buffer): [number, number] {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK_BYTES; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += byte;
    signed += byte < 0x80 ? byte : byte - 0x100;
  }
  return [unsigned, signed];
}

/**
 * The name prefix of the format, with its slash. Old GNU headers have none,
 * unless their time fields do not parse: then Go takes them for the prefix
 * that early Go writers put there.
 */
function prefixOf(block: Buffer, format: Format): string {
  let prefix = '';
  if (format === 'ustar') prefix = cString(block, 345, 155);
  else if (format === 'star') prefix = cString(block, 345, 131);
  else if (format === 'gnu' && !gnuTimesParse(block)) {
    const candidate = cString(block, 345, 155);
    if ([...candidate].every((char) => char.charCodeAt(0) < 0x80)) prefix = candidate;
  }
  return prefix === '' ? '' : `${prefix}/`;
}

function gnuTimesParse(block: Buffer): boolean {
  return [345, 357].every(
    (offset) => block[offset] === 0 || parseNumeric(block, offset, 12) !== undefined,
  );
}

/** A NUL-terminated string within `length` bytes at `offset`. */
function cString(bytes: Buffer, offset: number, length: number): string {
  const nul = bytes.indexOf(0, offset);
  const end = nul >= 0 && nul < offset + length ? nul : offset + length;
  return bytes.toString('utf8', offset, end);
}

/** Octal, or base-256 when the top bit is set (GNU's encoding of large values). */
export function parseNumeric(block: Buffer, offset: number, length: number): number | undefined {
  const first = block[offset]!;
  if ((first & 0x80) === 0) return parseOctal(block, offset, length);
  const invert = first & 0x40 ? 0xff : 0;
  let value = 0;
  for (let i = 0; i < length; i++) {
    let byte = block[offset + i]! ^ invert;
    if (i === 0) byte &= 0x7f;
    value = value * 256 + byte;
    if (value > Number.MAX_SAFE_INTEGER) return undefined;
  }
  return invert ? -value - 1 : value;
}

/** Octal digits padded with spaces or NULs on either side; undefined if anything else is there. */
function parseOctal(block: Buffer, offset: number, length: number): number | undefined {
  let start = offset;
  let end = offset + length;
  while (start < end && (block[start] === 0x20 || block[start] === 0)) start++;
  while (end > start && (block[end - 1] === 0x20 || block[end - 1] === 0)) end--;
  const nul = block.indexOf(0, start);
  if (nul >= 0 && nul < end) end = nul;
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = block[i]! - 0x30;
    if (digit < 0 || digit > 7) return undefined;
    value = value * 8 + digit;
  }
  return value;
}

/** A decimal integer as Go's strconv.ParseInt reads it. */
function parseDecimal(text: string): number | undefined {
  if (!/^[+-]?[0-9]+$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : undefined;
}

/** One `<length> <key>=<value>\n` record at `at`; undefined if malformed, as Go judges it. */
export function paxRecord(
  data: Buffer,
  at: number,
): { key: string; value: string; next: number } | undefined {
  const space = data.indexOf(0x20, at);
  if (space < 0) return undefined;
  const length = parseDecimal(data.toString('latin1', at, space));
  if (length === undefined || length < 5 || length > data.length - at) return undefined;
  const end = at + length - 1;
  if (end <= space || data[end] !== 0x0a) return undefined;
  const equals = data.indexOf(0x3d, space + 1);
  if (equals < 0 || equals >= end) return undefined;
  const key = data.toString('utf8', space + 1, equals);
  const valueBytes = data.subarray(equals + 1, end);
  const pathLike = key === 'path' || key === 'linkpath' || key === 'uname' || key === 'gname';
  if (key === '' || (pathLike ? valueBytes.includes(0) : key.includes('\0'))) return undefined;
  return { key, value: valueBytes.toString('utf8'), next: at + length };
}
