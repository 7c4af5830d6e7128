/**
 * `--secret` as buildx reads it, and the reading of the values it names.
 *
 * `id=ID[,type=file|env][,src=FILE|source=FILE][,env=VAR]`: without a
 * type, `id` alone names the environment variable ID when it is set, else
 * the file ID; `type=env` takes the variable from `env`, else `src`, else
 * `id`. A value never appears in an error: only the flag, the id and where
 * it was to come from.
 */
import { open } from 'node:fs/promises';
import type { Env } from '../../config/loader.js';
import { BraidError, UsageError } from '../../errors.js';
import { csvFields } from './csv.js';

/** BuildKit's own cap (secretsprovider.MaxSecretSize); a bigger secret fails the build there. */
export const SECRET_MAX_BYTES = 500 * 1024;

export type SecretSource = { kind: 'file'; path: string } | { kind: 'env'; name: string };

export interface SecretSpec {
  readonly id: string;
  readonly from: SecretSource;
}

export interface SecretValue {
  readonly id: string;
  readonly value: Uint8Array;
}

const FLAG = '--secret';

/**
 * One `--secret` value; `env` decides what a bare `id=ID` means, as in
 * buildx. Errors name the id and keys, never the text: a mistyped
 * `--secret TOKEN=value` must not print the value.
 */
export function parseSecret(text: string, env: Env): SecretSpec {
  const parsed = csvFields(text);
  if ('problem' in parsed) throw secretError('', `not valid CSV: ${parsed.problem}`);
  const pairs = parsed.fields.map((field) => {
    const eq = field.indexOf('=');
    return eq < 0 ? undefined : ([field.slice(0, eq).toLowerCase(), field.slice(eq + 1)] as const);
  });
  const id = pairs.findLast((pair) => pair?.[0] === 'id')?.[1] ?? '';
  const fail = (problem: string) => secretError(id, problem);
  let type: 'file' | 'env' | undefined;
  let src = '';
  let variable = '';
  for (const pair of pairs) {
    if (pair === undefined) throw fail('a field is not KEY=VALUE');
    const [key, value] = pair;
    if (key === 'type') {
      if (value !== 'file' && value !== 'env') throw fail('type must be file or env');
      type = value;
    } else if (key === 'src' || key === 'source') src = value;
    else if (key === 'env') variable = value;
    else if (key !== 'id') throw fail(`unknown key "${key}" (id, type, src, source, env)`);
  }
  if (id === '') throw fail('id is required (id=ID[,src=FILE|env=VAR])');
  if (type === 'file' && variable !== '') throw fail('type=file reads src, not env');
  // buildx: with type=env, src names the variable.
  if (type === 'env' && variable === '') [variable, src] = [src, ''];
  if (src !== '' && variable !== '') {
    throw fail('give src (a file) or env (a variable), not both');
  }
  if (variable !== '') return { id, from: { kind: 'env', name: variable } };
  if (src !== '') return { id, from: { kind: 'file', path: src } };
  const fromEnv = type === 'env' || (type === undefined && env[id] !== undefined);
  return { id, from: fromEnv ? { kind: 'env', name: id } : { kind: 'file', path: id } };
}

/** Every `--secret` given (empty values skipped, as buildx does); an id given twice is refused. */
export function parseSecrets(values: readonly string[], env: Env): SecretSpec[] {
  const specs = values.filter((v) => v !== '').map((v) => parseSecret(v, env));
  refuseDuplicates(specs);
  return specs;
}

export interface SecretSources {
  readonly env: Env;
  /** Reads a secret file; it may stop after SECRET_MAX_BYTES + 1 bytes. */
  readFile(path: string): Promise<Uint8Array>;
}

/** The values of `specs`, each checked against BuildKit's cap. */
export async function readSecrets(
  specs: readonly SecretSpec[],
  sources: SecretSources,
): Promise<SecretValue[]> {
  refuseDuplicates(specs);
  const values: SecretValue[] = [];
  for (const { id, from } of specs) {
    const fail = (problem: string) => secretError(id, problem);
    let value: Uint8Array;
    if (from.kind === 'env') {
      const text = sources.env[from.name];
      if (text === undefined) throw fail(`environment variable ${from.name} is not set`);
      value = Buffer.from(text, 'utf8');
    } else {
      try {
        value = await sources.readFile(from.path);
      } catch (err) {
        throw fail(`cannot read ${from.path} (${fileProblem(err)})`);
      }
    }
    if (value.byteLength > SECRET_MAX_BYTES) {
      const where = from.kind === 'env' ? `environment variable ${from.name}` : from.path;
      throw fail(
        `${where} holds more than ${SECRET_MAX_BYTES} bytes, BuildKit's 500 KiB limit for a secret`,
      );
    }
    values.push({ id, value });
  }
  return values;
}

/** Reads at most SECRET_MAX_BYTES + 1 bytes: enough to refuse a bigger file without loading it. */
export async function readSecretFile(path: string): Promise<Uint8Array> {
  const file = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(SECRET_MAX_BYTES + 1);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await file.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return buffer.subarray(0, length);
  } finally {
    await file.close();
  }
}

function refuseDuplicates(specs: readonly SecretSpec[]): void {
  const seen = new Set<string>();
  for (const { id } of specs) {
    if (seen.has(id)) throw secretError(id, 'given twice');
    seen.add(id);
  }
}

function secretError(id: string, problem: string): BraidError {
  return new UsageError(`${FLAG}${id ? ` id=${id}` : ''}: ${problem}`);
}

function fileProblem(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'a directory, not a file';
  return code ?? 'unreadable';
}
