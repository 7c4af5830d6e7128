/**
 * What every buildx flag parser shares: one wording for a bad value (the
 * flag, the value as given, the problem) and buildx's `key=value,...` form.
 */
import { BraidError, UsageError } from '../../errors.js';
import { csvFields } from './csv.js';

/** `--cache-to "type=local,dest=x": <problem>`: one line, exit 2. */
export function badValue(flag: string, value: string, problem: string): BraidError {
  return new UsageError(`${flag} "${value}": ${problem}`);
}

/** The fields of a CSV value; a value that is not CSV is a bad value. */
export function fieldsOf(flag: string, value: string): string[] {
  const parsed = csvFields(value);
  if ('problem' in parsed) throw badValue(flag, value, `not valid CSV: ${parsed.problem}`);
  return parsed.fields;
}

/**
 * `type=registry,ref=x` as [key, value] pairs in order; keys are
 * lower-cased as buildx does, values kept as given.
 */
export function attributesOf(flag: string, value: string): Array<[string, string]> {
  return fieldsOf(flag, value).map((field) => {
    const eq = field.indexOf('=');
    if (eq < 0) throw badValue(flag, value, `"${field}" is not KEY=VALUE`);
    return [field.slice(0, eq).toLowerCase(), field.slice(eq + 1)];
  });
}

/** Go's strconv.ParseBool, which buildx uses for boolean attributes. */
export function goBool(text: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(text)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(text)) return false;
  return undefined;
}
