/**
 * Config is compiled once: flags, then `BRAID_*` environment, then an
 * optional YAML file, then defaults — validated per key by a zod schema into
 * one frozen object. An invalid value is a ConfigError naming the key as the
 * user wrote it (`--listen`, `BRAID_LISTEN`, or `FILE: listen`).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { z } from 'zod';
import { ConfigError } from '../errors.js';

// yaml loads only when a config file is named: most runs have none, and
// every command's start-up time counts.
const requireLazily = createRequire(import.meta.url);
function parseYaml(text: string): unknown {
  return (requireLazily('yaml') as typeof import('yaml')).parse(text);
}

export type Env = Readonly<Record<string, string | undefined>>;

export interface ConfigSources {
  /** Parsed command-line flags by camelCase key; undefined means "not given". */
  flags: Readonly<Record<string, unknown>>;
  env: Env;
  /** YAML config file; `--config` / `BRAID_CONFIG`. */
  file?: string;
}

export function envName(key: string): string {
  return `BRAID_${key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
}

export function flagName(key: string): string {
  return `--${key.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase()}`;
}

function readYaml(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError('--config', `cannot read ${file} (${reason})`, { cause: err });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(file, `not valid YAML: ${(err as Error).message.split('\n')[0]}`, {
      cause: err,
    });
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError(file, 'expected a mapping of settings at the top level');
  }
  return doc as Record<string, unknown>;
}

/** Where each key of a compiled config came from, as the user spelled it. */
const SOURCES = new WeakMap<object, Readonly<Record<string, string>>>();

/**
 * The name of `key` as the user gave it (`--tls-cert`, `BRAID_TLS_CERT`,
 * `FILE: tlsCert`), for checks that span several keys; the flag name when
 * the config was not compiled by loadConfig (or was copied).
 */
export function settingSource(config: object, key: string): string {
  const source = SOURCES.get(config)?.[key];
  return source && !source.endsWith('(default)') ? source : flagName(key);
}

function issueText(error: z.ZodError): string {
  const issue = error.issues[0];
  return issue ? issue.message : 'invalid value';
}

/** Build the frozen config for `schema` from the three sources. */
export function loadConfig<Shape extends z.ZodRawShape>(
  schema: z.ZodObject<Shape>,
  sources: ConfigSources,
): Readonly<z.infer<z.ZodObject<Shape>>> {
  const fileValues = sources.file ? readYaml(sources.file) : {};
  const keys = Object.keys(schema.shape);
  for (const key of Object.keys(fileValues)) {
    if (!keys.includes(key)) {
      throw new ConfigError(
        `${sources.file}: ${key}`,
        `unknown setting (known: ${keys.join(', ')})`,
      );
    }
  }
  const result: Record<string, unknown> = {};
  const sourceOf: Record<string, string> = {};
  for (const key of keys) {
    const field = schema.shape[key] as z.ZodType;
    let source: string;
    let value: unknown;
    if (sources.flags[key] !== undefined) {
      source = flagName(key);
      value = sources.flags[key];
    } else if (sources.env[envName(key)] !== undefined) {
      source = envName(key);
      value = sources.env[envName(key)];
    } else if (fileValues[key] !== undefined) {
      source = `${sources.file}: ${key}`;
      value = fileValues[key];
    } else {
      source = `${key} (default)`;
      value = undefined;
    }
    const parsed = field.safeParse(value);
    if (!parsed.success) {
      const text = issueText(parsed.error);
      const shown = value === undefined ? '' : `"${String(value)}"`;
      const got = shown && !text.includes(shown) ? `, got ${shown}` : '';
      throw new ConfigError(source, `${text}${got}`);
    }
    result[key] = parsed.data;
    sourceOf[key] = source;
  }
  const frozen = Object.freeze(result);
  SOURCES.set(frozen, Object.freeze(sourceOf));
  return frozen as Readonly<z.infer<z.ZodObject<Shape>>>;
}

// --- field helpers: accept the string forms that flags and env deliver -------

export function intSetting(options: { min: number; max: number; default: number }) {
  return z.preprocess(
    (v) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v),
    z
      .number({ error: 'expected an integer' })
      .int({ error: 'expected an integer' })
      .min(options.min, { error: `must be at least ${options.min}` })
      .max(options.max, { error: `must be at most ${options.max}` })
      .default(options.default),
  );
}

export function boolSetting(defaultValue: boolean) {
  return z.preprocess(
    (v) => {
      if (typeof v !== 'string') return v;
      const s = v.trim().toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(s)) return true;
      if (['0', 'false', 'no', 'off', ''].includes(s)) return false;
      return v;
    },
    z.boolean({ error: 'expected true or false' }).default(defaultValue),
  );
}

export function enumSetting<const T extends readonly [string, ...string[]]>(
  values: T,
  defaultValue: T[number],
) {
  return z
    .enum(values, { error: `expected one of ${values.join(', ')}` })
    .default(defaultValue as never);
}

/** A string setting validated (and transformed) by `parse`, which throws on bad input. */
export function parsedSetting<T>(parse: (text: string) => T, defaultValue: string) {
  return z
    .string({ error: 'expected a string' })
    .default(defaultValue)
    .transform((text, ctx) => {
      try {
        return parse(text);
      } catch (err) {
        ctx.issues.push({ code: 'custom', message: (err as Error).message, input: text });
        return z.NEVER;
      }
    });
}

/** An optional path; unset (or empty) means "not configured". */
export function optionalPathSetting() {
  return z
    .string({ error: 'expected a path' })
    .optional()
    .transform((text) => (text && text.trim() !== '' ? text : undefined));
}

/** An optional secret string (a token); unset or empty means none. */
export function optionalSecretSetting() {
  return z
    .string({ error: 'expected a string' })
    .optional()
    .transform((text) => (text && text.trim() !== '' ? text.trim() : undefined));
}

/** A list setting: repeated flags arrive as arrays, env and YAML may give "a,b". */
export function listSetting(check: (item: string) => void = () => undefined) {
  return z
    .preprocess(
      (v) =>
        typeof v === 'string'
          ? v
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
          : v,
      z.array(z.string({ error: 'expected a list of strings' })).default([]),
    )
    .transform((items, ctx) => {
      for (const item of items) {
        try {
          check(item);
        } catch (err) {
          ctx.issues.push({ code: 'custom', message: (err as Error).message, input: item });
          return z.NEVER;
        }
      }
      return items;
    });
}
