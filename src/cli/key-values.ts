/**
 * `KEY=VALUE` flags (`--build-arg`, `--label`, `--annotation`): one parser,
 * one wording of its errors.
 */
import { UsageError } from '../errors.js';

export interface KeyValueRules {
  /** The flag, named in errors. */
  flag: string;
  /** What a key must look like (default: not empty, no white space). */
  key?: RegExp;
  /** A bare `KEY` takes its value from here, or is skipped when unset (docker's --build-arg). */
  env?: Readonly<Record<string, string | undefined>>;
}

const ANY_KEY = /^\S+$/;

export function parseKeyValues(
  pairs: readonly string[],
  rules: KeyValueRules,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq < 0 && !rules.env) {
      throw new UsageError(`${rules.flag} "${pair}": expected KEY=VALUE`);
    }
    const key = eq < 0 ? pair : pair.slice(0, eq);
    if (!(rules.key ?? ANY_KEY).test(key)) {
      throw new UsageError(`${rules.flag} "${pair}": "${key}" is not a valid name`);
    }
    if (eq >= 0) out[key] = pair.slice(eq + 1);
    else if (rules.env?.[key] !== undefined) out[key] = rules.env[key] as string;
  }
  return out;
}
