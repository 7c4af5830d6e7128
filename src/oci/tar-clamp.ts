/**
 * Clamps the file times of a tar stream to an epoch (SOURCE_DATE_EPOCH):
 * every mtime, and the pax and old-GNU atime/ctime, later than the epoch
 * becomes the epoch; earlier ones stay. It is what BuildKit's
 * `rewrite-timestamp=true` does to a layer, done here because the Docker
 * Engine cannot. Only the time fields and the checksums change: names,
 * order, modes, owners and contents pass through byte for byte, so a layer
 * with nothing to clamp comes out identical.
 *
 * Entries are framed the way tar-headers.ts reads them (as Go's
 * archive/tar does): link, directory and device entries carry no content
 * whatever their size says; pax headers are held whole (at most
 * MAX_EXTENSION_BYTES) so their records can be rewritten.
 */
import { Transform, type TransformCallback } from 'node:stream';
import {
  carriesNoContent,
  checksums,
  MAX_EXTENSION_BYTES,
  parseNumeric,
  paxRecord,
  TarFormatError,
} from './tar-headers.js';

const BLOCK = 512;
const MTIME = { offset: 136, length: 12 };
/** Old GNU headers keep atime and ctime here (zero when unused). */
const GNU_TIMES = [
  { offset: 345, length: 12 },
  { offset: 357, length: 12 },
];
const SIZE = { offset: 124, length: 12 };
const CHECKSUM_OFFSET = 148;
const TYPEFLAG_OFFSET = 156;
const TYPE_PAX = 0x78; // 'x'
const TYPE_PAX_GLOBAL = 0x67; // 'g'
const PAX_TIME_KEYS = new Set(['mtime', 'atime', 'ctime']);

export interface ClampStats {
  /** Header and pax time fields moved back to the epoch. */
  clamped: number;
}

/**
 * A stream that copies a tar archive with its times clamped to
 * `epochSeconds`. `stats` counts what it changed once the stream ends.
 */
export function clampTarTimes(epochSeconds: number, stats: ClampStats = { clamped: 0 }): Transform {
  if (!Number.isSafeInteger(epochSeconds) || epochSeconds < 0) {
    throw new RangeError(`epoch ${epochSeconds} is not a non-negative integer`);
  }
  let pending: Buffer = Buffer.alloc(0);
  /** Content bytes (with padding) still to copy as they are. */
  let passBytes = 0;
  /** A pax header waiting for its content: the header block and the content's size. */
  let pax: { header: Buffer; size: number } | undefined;

  const clampHeader = (block: Buffer): Buffer => {
    const out = Buffer.from(block);
    let changed = clampField(out, MTIME.offset, MTIME.length, epochSeconds);
    if (isOldGnu(out)) {
      for (const field of GNU_TIMES) {
        if (out[field.offset] !== 0 && clampField(out, field.offset, field.length, epochSeconds))
          changed = true;
      }
    }
    if (!changed) return block;
    stats.clamped++;
    writeChecksum(out);
    return out;
  };

  const onHeader = (block: Buffer): Buffer[] => {
    if (block.every((byte) => byte === 0)) return [block];
    const [unsigned, signed] = checksums(block);
    const stored = parseNumeric(block, CHECKSUM_OFFSET, 8);
    if (stored !== unsigned && stored !== signed) {
      throw new TarFormatError('tar header checksum mismatch');
    }
    const typeflag = block[TYPEFLAG_OFFSET]!;
    const size = parseNumeric(block, SIZE.offset, SIZE.length);
    if (size === undefined || size < 0) throw new TarFormatError('tar header has an invalid size');
    if (typeflag === TYPE_PAX || typeflag === TYPE_PAX_GLOBAL) {
      if (size > MAX_EXTENSION_BYTES) {
        throw new TarFormatError(`pax header of ${size} bytes exceeds ${MAX_EXTENSION_BYTES}`);
      }
      pax = { header: block, size };
      return [];
    }
    passBytes = carriesNoContent(typeflag) ? 0 : size + padding(size);
    return [clampHeader(block)];
  };

  /** `raw` is the pax content with its padding, as it arrived. */
  const onPax = (header: Buffer, raw: Buffer, size: number): Buffer[] => {
    const rewritten = clampPaxRecords(raw.subarray(0, size), epochSeconds);
    if (rewritten === undefined) return [clampHeader(header), raw];
    stats.clamped++;
    const out = Buffer.from(header);
    writeOctal(out, SIZE.offset, SIZE.length, rewritten.length);
    clampField(out, MTIME.offset, MTIME.length, epochSeconds);
    writeChecksum(out);
    return [out, rewritten, zeros(rewritten.length)];
  };

  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      try {
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        let at = 0;
        while (at < pending.length) {
          if (passBytes > 0) {
            const take = Math.min(passBytes, pending.length - at);
            this.push(pending.subarray(at, at + take));
            passBytes -= take;
            at += take;
            continue;
          }
          if (pax !== undefined) {
            const whole = pax.size + padding(pax.size);
            if (pending.length - at < whole) break;
            const raw = pending.subarray(at, at + whole);
            for (const part of onPax(pax.header, raw, pax.size)) this.push(part);
            pax = undefined;
            at += whole;
            continue;
          }
          if (pending.length - at < BLOCK) break;
          for (const part of onHeader(pending.subarray(at, at + BLOCK))) this.push(part);
          at += BLOCK;
        }
        pending = Buffer.from(pending.subarray(at));
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    flush(callback: TransformCallback) {
      if (pax !== undefined) {
        callback(new TarFormatError('tar archive ends inside a pax header'));
        return;
      }
      // Trailing bytes shorter than a block are not ours to judge: kept as they are.
      if (pending.length > 0) this.push(pending);
      callback();
    },
  });
}

/**
 * The pax records with every time later than the epoch set to it, or
 * undefined when none is (the content is then kept as it is).
 */
function clampPaxRecords(content: Buffer, epochSeconds: number): Buffer | undefined {
  const records: Array<{ key: string; value: string }> = [];
  let changed = false;
  for (let at = 0; at < content.length;) {
    if (content[at] === 0) break;
    const record = paxRecord(content, at);
    if (record === undefined) throw new TarFormatError('malformed pax record');
    let { value } = record;
    if (PAX_TIME_KEYS.has(record.key) && Number(value) > epochSeconds) {
      value = String(epochSeconds);
      changed = true;
    }
    records.push({ key: record.key, value });
    at = record.next;
  }
  if (!changed) return undefined;
  return Buffer.concat(records.map(({ key, value }) => formatPaxRecord(key, value)));
}

/** `<length> <key>=<value>\n`, where the length counts its own digits. */
function formatPaxRecord(key: string, value: string): Buffer {
  const body = Buffer.from(` ${key}=${value}\n`, 'utf8');
  let length = body.length + 1;
  while (String(length).length + body.length !== length)
    length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length)), body]);
}

/** Sets the numeric field to the epoch when it holds a later time; true if it did. */
function clampField(block: Buffer, offset: number, length: number, epochSeconds: number): boolean {
  const value = parseNumeric(block, offset, length);
  if (value === undefined || value <= epochSeconds) return false;
  writeOctal(block, offset, length, epochSeconds);
  return true;
}

/** Zero-padded octal digits and a NUL, as Go's archive/tar writes numbers. */
function writeOctal(block: Buffer, offset: number, length: number, value: number): void {
  const digits = value.toString(8).padStart(length - 1, '0');
  if (digits.length > length - 1) throw new TarFormatError(`${value} does not fit a tar field`);
  block.write(digits, offset, 'latin1');
  block[offset + length - 1] = 0;
}

/** Six octal digits, NUL, space: the checksum as Go and GNU tar write it. */
function writeChecksum(block: Buffer): void {
  const [unsigned] = checksums(block);
  block.write(unsigned.toString(8).padStart(6, '0'), CHECKSUM_OFFSET, 'latin1');
  block[CHECKSUM_OFFSET + 6] = 0;
  block[CHECKSUM_OFFSET + 7] = 0x20;
}

/** Old GNU magic "ustar  \0": atime and ctime live where ustar keeps the prefix. */
function isOldGnu(block: Buffer): boolean {
  return block.toString('latin1', 257, 265) === 'ustar  \0';
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function zeros(size: number): Buffer {
  return Buffer.alloc(padding(size));
}
