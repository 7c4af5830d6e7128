/**
 * Config is compiled once: flags, then `BRAID_*` environment, then an
 * optional YAML file, then defaults — validated per key by a schema
 * (src/schema.ts) into one frozen object. An invalid value is a ConfigError
 * naming the key as the user wrote it (`--listen`, `BRAID_LISTEN`, or
 * `FILE: listen`).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ConfigError } from '../errors.js';
import {
  array,
  boolean,
  checked,
  integer,
  Invalid,
  oneOf,
  optional,
  string,
  withDefault,
  type Infer,
  type Schema,
  type Shape,
} from '../schema.js';

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

/** Where a key's value came from: a flag, a `BRAID_*` variable, the YAML file, or the default. */
export type SettingOrigin =
  | { kind: 'flag'; name: string }
  | { kind: 'env'; name: string }
  | { kind: 'file'; name: string; file: string; key: string }
  | { kind: 'default'; name: string };

/** Where each key of a compiled config came from, as the user spelled it. */
const ORIGINS = new WeakMap<object, Readonly<Record<string, SettingOrigin>>>();

/**
 * Where `key` of `config` came from; undefined when the config was not
 * compiled by loadConfig (or was copied).
 */
export function settingOrigin(config: object, key: string): SettingOrigin | undefined {
  return ORIGINS.get(config)?.[key];
}

/**
 * The name of `key` as the user gave it (`--tls-cert`, `BRAID_TLS_CERT`,
 * `FILE: tlsCert`), for checks that span several keys; the flag name when
 * the key was not given or the config was not compiled by loadConfig.
 */
export function settingSource(config: object, key: string): string {
  const origin = settingOrigin(config, key);
  return origin && origin.kind !== 'default' ? origin.name : flagName(key);
}

/** The settings of one command, key by key. */
export type SettingsOf<S extends Shape> = { [K in keyof S]: Infer<S[K]> };

/** Settings that are a second reading of another key's value, by the key they read. */
const DERIVED = new WeakMap<object, string>();

/**
 * A setting read from the value given for `fromKey` (flag, variable, file
 * or default alike): `coordinators` is every address `coordinator` names.
 * It has no flag, variable or file key of its own.
 */
export function derivedSetting<T>(fromKey: string, schema: Schema<T>): Schema<T> {
  const read: Schema<T> = (value) => schema(value);
  DERIVED.set(read, fromKey);
  return read;
}

/** The keys of `schema` a user can set: all but the derived ones. */
export function givenKeys(schema: Shape): string[] {
  return Object.keys(schema).filter((key) => !DERIVED.has(schema[key] as object));
}

/** Build the frozen config for `schema` from the three sources. */
export function loadConfig<S extends Shape>(
  schema: S,
  sources: ConfigSources,
): Readonly<SettingsOf<S>> {
  const fileValues = sources.file ? readYaml(sources.file) : {};
  const keys = Object.keys(schema);
  const settable = givenKeys(schema);
  for (const key of Object.keys(fileValues)) {
    if (!settable.includes(key)) {
      throw new ConfigError(
        `${sources.file}: ${key}`,
        `unknown setting (known: ${settable.join(', ')})`,
      );
    }
  }
  const result: Record<string, unknown> = {};
  const originOf: Record<string, SettingOrigin> = {};
  for (const key of keys) {
    // A derived setting reads its source key's value, and is named by it.
    const from = DERIVED.get(schema[key] as object) ?? key;
    let origin: SettingOrigin;
    let value: unknown;
    if (sources.flags[from] !== undefined) {
      origin = { kind: 'flag', name: flagName(from) };
      value = sources.flags[from];
    } else if (sources.env[envName(from)] !== undefined) {
      origin = { kind: 'env', name: envName(from) };
      value = sources.env[envName(from)];
    } else if (sources.file && fileValues[from] !== undefined) {
      origin = { kind: 'file', name: `${sources.file}: ${from}`, file: sources.file, key: from };
      value = fileValues[from];
    } else {
      origin = { kind: 'default', name: `${from} (default)` };
      value = undefined;
    }
    try {
      result[key] = schema[key]!(value);
    } catch (err) {
      if (!(err instanceof Invalid)) throw err;
      const shown = value === undefined ? '' : `"${String(value)}"`;
      const got = shown && !err.showsValue && !err.message.includes(shown) ? `, got ${shown}` : '';
      throw new ConfigError(origin.name, `${err.message}${got}`);
    }
    originOf[key] = origin;
  }
  const frozen = Object.freeze(result);
  ORIGINS.set(frozen, Object.freeze(originOf));
  return frozen as Readonly<SettingsOf<S>>;
}

// --- field helpers: accept the string forms that flags and env deliver -------

export function intSetting(options: { min: number; max: number; default: number }) {
  const read = integer(options);
  return withDefault<number>(
    (v) => read(typeof v === 'string' && v.trim() !== '' ? Number(v) : v),
    options.default,
  );
}

export function boolSetting(defaultValue: boolean) {
  const read = boolean('expected true or false');
  return withDefault<boolean>((v) => {
    if (typeof v !== 'string') return read(v);
    const s = v.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(s)) return true;
    if (['0', 'false', 'no', 'off', ''].includes(s)) return false;
    return read(v);
  }, defaultValue);
}

export function enumSetting<const T extends readonly [string, ...string[]]>(
  values: T,
  defaultValue: T[number],
) {
  return withDefault(oneOf(values), defaultValue);
}

/** A string setting, `defaultValue` when unset. */
export function stringSetting(
  defaultValue: string,
  options: { min?: number; pattern?: RegExp; message?: string } = {},
) {
  return withDefault(string(options), defaultValue);
}

/** A string setting validated (and transformed) by `parse`, which throws on bad input. */
export function parsedSetting<T>(parse: (text: string) => T, defaultValue: string) {
  return checked(stringSetting(defaultValue, { message: 'expected a string' }), parse);
}

/** An optional string read by `parse`; unset (or blank) means "not configured". */
export function optionalSetting<T>(parse: (text: string) => T, what = 'a string') {
  return checked(optional(string({ message: `expected ${what}` })), (text) =>
    text === undefined || text.trim() === '' ? undefined : parse(text),
  );
}

/** An optional path; unset (or empty) means "not configured". */
export function optionalPathSetting() {
  return optionalSetting((text) => text, 'a path');
}

/** An optional secret string (a token); unset or empty means none. */
export function optionalSecretSetting() {
  return optionalSetting((text) => text.trim());
}

/** A list setting: repeated flags arrive as arrays, env and YAML may give "a,b". */
export function listSetting(check: (item: string) => void = () => undefined) {
  const items = array(string({ message: 'expected a list of strings' }));
  return withDefault<string[]>(
    checked(
      (v) =>
        items(
          typeof v === 'string'
            ? v
                .split(',')
                .map((s) => s.trim())
                .filter(Boolean)
            : v,
        ),
      (list) => {
        list.forEach(check);
        return list;
      },
    ),
    [],
  );
}
