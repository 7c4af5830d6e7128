/**
 * A small parser of the Prometheus text exposition format (version 0.0.4),
 * so tests assert the values a scraper would read: families with their
 * HELP and TYPE, samples with labels (escapes decoded) and float values.
 */

export interface Sample {
  /** The sample's own name: `x`, or `x_bucket`, `x_sum`, `x_count` of a histogram `x`. */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface MetricFamily {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

export class Exposition {
  constructor(readonly families: ReadonlyMap<string, MetricFamily>) {}

  family(name: string): MetricFamily {
    const family = this.families.get(name);
    if (!family) throw new Error(`no metric family ${name} in the exposition`);
    return family;
  }

  /** Samples named `sample` whose labels include every pair of `labels`. */
  samples(sample: string, labels: Record<string, string> = {}): Sample[] {
    const found: Sample[] = [];
    for (const family of this.families.values()) {
      for (const s of family.samples) {
        if (s.name !== sample) continue;
        if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) found.push(s);
      }
    }
    return found;
  }

  /** The value of the one sample that matches; an error when none or several do. */
  value(sample: string, labels: Record<string, string> = {}): number {
    const found = this.samples(sample, labels);
    if (found.length !== 1) {
      throw new Error(
        `expected one sample ${sample}${JSON.stringify(labels)}, found ${found.length}: ${found
          .map((s) => JSON.stringify(s.labels))
          .join(' ')}`,
      );
    }
    return (found[0] as Sample).value;
  }

  /** The sum of every matching sample (0 when none match). */
  sum(sample: string, labels: Record<string, string> = {}): number {
    return this.samples(sample, labels).reduce((total, s) => total + s.value, 0);
  }
}

const NAME = /[a-zA-Z_:][a-zA-Z0-9_:]*/y;
const LABEL_NAME = /[a-zA-Z_][a-zA-Z0-9_]*/y;
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count', '_created'];

/** Floats as Go's ParseFloat reads them: Inf and NaN in any case (prom-client writes "Nan"). */
function parseValue(text: string, line: string): number {
  const special = text.toLowerCase();
  if (special === '+inf' || special === 'inf') return Infinity;
  if (special === '-inf') return -Infinity;
  if (special === 'nan') return NaN;
  const value = Number(text);
  if (text === '' || Number.isNaN(value)) throw new Error(`bad sample value "${text}" in: ${line}`);
  return value;
}

/** Scans one sample line: name, optional {labels}, value, optional timestamp. */
function parseSample(line: string): Sample {
  let at = 0;
  const token = (pattern: RegExp, what: string): string => {
    pattern.lastIndex = at;
    const match = pattern.exec(line);
    if (!match) throw new Error(`expected ${what} at column ${at + 1} of: ${line}`);
    at = pattern.lastIndex;
    return match[0];
  };
  const expect = (char: string) => {
    if (line[at] !== char) throw new Error(`expected "${char}" at column ${at + 1} of: ${line}`);
    at++;
  };
  const name = token(NAME, 'a metric name');
  const labels: Record<string, string> = {};
  if (line[at] === '{') {
    at++;
    while (line[at] !== '}') {
      const label = token(LABEL_NAME, 'a label name');
      expect('=');
      expect('"');
      let value = '';
      for (;;) {
        const char = line[at++];
        if (char === undefined) throw new Error(`unterminated label value in: ${line}`);
        if (char === '"') break;
        if (char === '\\') {
          const escaped = line[at++];
          value += escaped === 'n' ? '\n' : (escaped ?? '');
        } else {
          value += char;
        }
      }
      if (label in labels) throw new Error(`label ${label} repeated in: ${line}`);
      labels[label] = value;
      if (line[at] === ',') at++;
      else if (line[at] !== '}')
        throw new Error(`expected "," or "}" at column ${at + 1} of: ${line}`);
    }
    at++;
  }
  const rest = line.slice(at).trim().split(/\s+/);
  if (rest.length < 1 || rest.length > 2) throw new Error(`bad sample line: ${line}`);
  return { name, labels, value: parseValue(rest[0] ?? '', line) };
}

/** The family a sample belongs to: its own name, or a histogram's/summary's base name. */
function familyOf(sample: string, families: Map<string, MetricFamily>): MetricFamily | undefined {
  const own = families.get(sample);
  if (own) return own;
  for (const suffix of HISTOGRAM_SUFFIXES) {
    if (!sample.endsWith(suffix)) continue;
    const base = families.get(sample.slice(0, -suffix.length));
    if (base && (base.type === 'histogram' || base.type === 'summary')) return base;
  }
  return undefined;
}

export function parsePromText(text: string): Exposition {
  const families = new Map<string, MetricFamily>();
  const declare = (name: string): MetricFamily => {
    let family = families.get(name);
    if (!family) {
      family = { name, type: 'untyped', help: '', samples: [] };
      families.set(name, family);
    }
    return family;
  };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const comment = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (!comment) continue;
      const family = declare(comment[2] as string);
      if (comment[1] === 'TYPE') family.type = comment[3] ?? 'untyped';
      else family.help = (comment[3] ?? '').replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
      continue;
    }
    const sample = parseSample(line);
    (familyOf(sample.name, families) ?? declare(sample.name)).samples.push(sample);
  }
  return new Exposition(families);
}

/** The probe URL a coordinator logs once it serves it (`metricsListen` on a JSON log line). */
export function probeUrlFromLog(stderr: string): string | undefined {
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as { metricsListen?: unknown };
      if (typeof entry.metricsListen === 'string') return entry.metricsListen;
    } catch {
      // Not a log line.
    }
  }
  return undefined;
}

/** GET /metrics from a probe URL (loopback) and parse it; an error unless it answers 200. */
export async function scrape(probeUrl: string): Promise<Exposition> {
  const response = await fetch(new URL('metrics', probeUrl));
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET /metrics: HTTP ${response.status}: ${text}`);
  return parsePromText(text);
}
