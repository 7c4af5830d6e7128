/**
 * An ImageDiff as plain lines for people and CI logs, one difference a line:
 * `/stamp: content sha256:ab12… (agent a) ≠ sha256:cd34… (agent b); mtime 2026-…Z ≠ 2026-…Z`.
 */
import type {
  FileDifference,
  FileField,
  ImageDiff,
  JsonDifference,
  LayerDifference,
  LayerEntryDifference,
} from './image-diff.js';
import type { FileRecord } from './layer-entries.js';

const SHORT_HEX = 12;
const MAX_VALUE_CHARS = 120;

/** One line per difference; none when the images are the same. `labels` name image a and b. */
export function formatImageDiff(diff: ImageDiff, labels: [string, string] = ['a', 'b']): string[] {
  if (diff.same) return [];
  const [la, lb] = labels;
  const lines: string[] = [];
  for (const d of diff.manifest) lines.push(`manifest ${jsonLine(d, la, lb)}`);
  more(lines, diff.omitted.manifest, 'manifest');
  for (const d of diff.config) lines.push(`config ${jsonLine(d, la, lb)}`);
  more(lines, diff.omitted.config, 'config');
  for (const d of diff.files) lines.push(fileLine(d, la, lb));
  more(lines, diff.omitted.files, 'file');
  for (const layer of diff.layers) lines.push(...layerLines(layer, la, lb));
  if (lines.length === 0) {
    lines.push(
      `${diff.a} (${la}) and ${diff.b} (${lb}) differ only in the bytes of their manifests or configs (same fields, layers and files)`,
    );
  }
  return lines;
}

function more(lines: string[], count: number, what: string): void {
  if (count > 0) lines.push(`… and ${count} more ${what} difference${count === 1 ? '' : 's'}`);
}

function jsonLine(d: JsonDifference, la: string, lb: string): string {
  return `${d.path || '(root)'}: ${jsonValue(d.a)} (${la}) ≠ ${jsonValue(d.b)} (${lb})`;
}

function jsonValue(value: unknown): string {
  if (value === undefined) return '(absent)';
  const text = JSON.stringify(value);
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 1)}…` : text;
}

function fileLine(d: FileDifference, la: string, lb: string): string {
  if (d.kind === 'only-a') return `${d.path}: only in ${la} (${describe(d.a!)})`;
  if (d.kind === 'only-b') return `${d.path}: only in ${lb} (${describe(d.b!)})`;
  const parts = d.fields.map((field, i) => {
    const a = fieldValue(field, d.a!);
    const b = fieldValue(field, d.b!);
    return i === 0 ? `${field} ${a} (${la}) ≠ ${b} (${lb})` : `${field} ${a} ≠ ${b}`;
  });
  return `${d.path}: ${parts.join('; ')}`;
}

function layerLines(layer: LayerDifference, la: string, lb: string): string[] {
  const at = `layer ${layer.index}`;
  if (layer.kind === 'only-a' || layer.kind === 'only-b') {
    const [label, side] = layer.kind === 'only-a' ? [la, layer.a] : [lb, layer.b];
    return [`${at}: only in ${label} (${short(side?.digest)})`];
  }
  const head = `${at}: ${short(layer.a?.digest)} (${la}) ≠ ${short(layer.b?.digest)} (${lb})`;
  switch (layer.kind) {
    case 'entries': {
      const lines = [`${head}: ${layer.entries.length + layer.moreEntries} entries differ`];
      for (const entry of layer.entries) lines.push(`${at} ${entryLine(entry, la, lb)}`);
      if (layer.moreEntries > 0) lines.push(`${at}: … and ${layer.moreEntries} more entries`);
      return lines;
    }
    case 'order':
      return [`${head}: the same entries in another order`];
    case 'tar-headers':
      return [
        `${head}: the same entries in the same order; other tar bytes (user or group names, pax records or format)`,
      ];
    case 'compression':
      return [`${head}: the same tar (${short(layer.a?.diffId)}), compressed differently`];
  }
}

function entryLine(entry: LayerEntryDifference, la: string, lb: string): string {
  const line = fileLine(entry, la, lb);
  return entry.hidden
    ? `${line} [not in the final filesystem: a later layer replaces or deletes it]`
    : line;
}

function describe(record: FileRecord): string {
  const parts: string[] = [record.type];
  if (record.type === 'file') parts.push(`${record.size} bytes`);
  if (record.linkname !== undefined) parts.push(`→ ${JSON.stringify(record.linkname)}`);
  parts.push(`mode ${octal(record.mode)}`, `uid ${record.uid}`, `gid ${record.gid}`);
  parts.push(`mtime ${time(record.mtime)}`);
  if (record.digest) parts.push(short(record.digest));
  return parts.join(', ');
}

function fieldValue(field: FileField, record: FileRecord): string {
  switch (field) {
    case 'type':
      return record.type;
    case 'content':
      return record.digest ? short(record.digest) : '(none)';
    case 'size':
      return String(record.size);
    case 'mode':
      return octal(record.mode);
    case 'uid':
      return String(record.uid);
    case 'gid':
      return String(record.gid);
    case 'mtime':
      return time(record.mtime);
    case 'linkname':
      return JSON.stringify(record.linkname ?? '');
    case 'device':
      return record.device ?? '(none)';
    case 'xattrs':
      return jsonValue(record.xattrs ?? {});
  }
}

function short(digest: string | undefined): string {
  if (!digest) return '(none)';
  const colon = digest.indexOf(':');
  return `${digest.slice(0, colon + 1 + SHORT_HEX)}…`;
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** Seconds since the epoch (maybe with a fraction) as UTC ISO 8601; `` is an implied directory's. */
function time(mtime: string): string {
  if (mtime === '') return '(implied)';
  const [whole = '0', fraction] = mtime.split('.');
  const date = new Date(Number(whole) * 1000);
  if (Number.isNaN(date.getTime())) return mtime;
  const iso = date.toISOString().replace('.000Z', '');
  return fraction ? `${iso}.${fraction}Z` : `${iso}Z`;
}
