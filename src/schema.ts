/**
 * Checks for values that come from outside: settings (flags, `BRAID_*`
 * variables, the YAML config) and the few documents braid reads (a
 * manifest-tool spec, the farm record). A schema is a plain function from
 * `unknown` to a typed value that throws `Invalid` with one line for the
 * user and the path of the offending value within the document.
 *
 * It is ours, and small, because every braid command compiles its settings
 * before it does anything: loading a general validation library (zod, 730
 * KiB bundled) cost each command ~60-90 ms of start-up on a 2-core machine,
 * more than `braid manifest create` spends talking to a local registry.
 */

/** A value failed its check: `message` is one line; `path` locates it (`manifests.0.image`). */
export class Invalid extends Error {
  constructor(
    message: string,
    readonly path: readonly (string | number)[] = [],
    /** The message shows the value as it may be printed (a password hidden): do not add it as given. */
    readonly showsValue = false,
  ) {
    super(message);
    this.name = 'Invalid';
  }

  /** `manifests.0.image: must not be empty`, or the message alone at the top. */
  describe(top = ''): string {
    const where = this.path.length > 0 ? this.path.join('.') : top;
    return where ? `${where}: ${this.message}` : this.message;
  }
}

/** Reads `value` as a T, or throws Invalid. */
export type Schema<T> = (value: unknown) => T;

export type Infer<S> = S extends Schema<infer T> ? T : never;

export type Shape = Record<string, Schema<unknown>>;

/** The object a shape reads into; keys whose value may be undefined are optional. */
export type ObjectOf<S extends Shape> = Flatten<
  { [K in keyof S as undefined extends Infer<S[K]> ? never : K]: Infer<S[K]> } & {
    [K in keyof S as undefined extends Infer<S[K]> ? K : never]?: Infer<S[K]>;
  }
>;

type Flatten<T> = { [K in keyof T]: T[K] } & {};

/** `fn` with the path of its failures moved under `key`. */
function at<T>(key: string | number, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof Invalid) throw new Invalid(err.message, [key, ...err.path]);
    throw err;
  }
}

/** A string; `min` characters at least, and matching `pattern` when given. */
export function string(
  options: { min?: number; pattern?: RegExp; message?: string } = {},
): Schema<string> {
  const { min = 0, pattern, message } = options;
  return (value) => {
    if (typeof value !== 'string') throw new Invalid(message ?? 'expected a string');
    if (value.length < min) {
      throw new Invalid(
        message ?? (min === 1 ? 'must not be empty' : `must be at least ${min} characters`),
      );
    }
    if (pattern && !pattern.test(value)) throw new Invalid(message ?? `must match ${pattern}`);
    return value;
  };
}

export function boolean(message = 'expected true or false'): Schema<boolean> {
  return (value) => {
    if (typeof value !== 'boolean') throw new Invalid(message);
    return value;
  };
}

/** An integer within [min, max]. */
export function integer(options: { min: number; max: number }): Schema<number> {
  return (value) => {
    if (typeof value !== 'number' || !Number.isInteger(value)) {
      throw new Invalid('expected an integer');
    }
    if (value < options.min) throw new Invalid(`must be at least ${options.min}`);
    if (value > options.max) throw new Invalid(`must be at most ${options.max}`);
    return value;
  };
}

export function literal<const T extends string | number | boolean>(expected: T): Schema<T> {
  return (value) => {
    if (value !== expected) throw new Invalid(`expected ${JSON.stringify(expected)}`);
    return expected;
  };
}

export function oneOf<const T extends readonly [string, ...string[]]>(
  values: T,
): Schema<T[number]> {
  return (value) => {
    if (typeof value !== 'string' || !values.includes(value)) {
      throw new Invalid(`expected one of ${values.join(', ')}`);
    }
    return value as T[number];
  };
}

export function array<T>(item: Schema<T>, options: { min?: number } = {}): Schema<T[]> {
  return (value) => {
    if (!Array.isArray(value)) throw new Invalid('expected a list');
    if (value.length < (options.min ?? 0)) {
      throw new Invalid(`expected at least ${options.min} item(s)`);
    }
    return value.map((v, i) => at(i, () => item(v)));
  };
}

/** undefined passes as undefined; anything else must pass `schema`. */
export function optional<T>(schema: Schema<T>): Schema<T | undefined> {
  return (value) => (value === undefined ? undefined : schema(value));
}

/** `schema`, then `check` on what it read: what `check` throws becomes the one-line complaint. */
export function checked<T, U>(schema: Schema<T>, check: (value: T) => U): Schema<U> {
  return (value) => {
    const read = schema(value);
    try {
      return check(read);
    } catch (err) {
      if (err instanceof Invalid) throw err;
      throw new Invalid(err instanceof Error ? err.message : String(err));
    }
  };
}

/** undefined reads as `fallback` (taken as it is: a default is the code's, not the user's). */
export function withDefault<T>(schema: Schema<T>, fallback: T): Schema<T> {
  return (value) => (value === undefined ? fallback : schema(value));
}

/**
 * A mapping with the keys of `shape`. Unknown keys are refused with
 * `strict`, else dropped; the result holds only keys whose value is defined.
 */
export function object<S extends Shape>(
  shape: S,
  options: { strict?: boolean } = {},
): Schema<ObjectOf<S>> {
  return (value) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new Invalid('expected a mapping');
    }
    const input = value as Record<string, unknown>;
    if (options.strict) {
      const unknown = Object.keys(input).find((key) => !Object.hasOwn(shape, key));
      if (unknown !== undefined) {
        throw new Invalid(`unknown key (known: ${Object.keys(shape).join(', ')})`, [unknown]);
      }
    }
    const output: Record<string, unknown> = {};
    for (const [key, schema] of Object.entries(shape)) {
      const read = at(key, () => schema(input[key]));
      if (read !== undefined) output[key] = read;
    }
    return output as ObjectOf<S>;
  };
}
