/**
 * Versioned schema migrations for the build stores. Each store keeps a
 * numbered list of migrations and a `schema_version` table with one row per
 * migration applied; at start the store reads the highest version, refuses
 * a database newer than this binary knows, and applies the missing
 * migrations in order inside one transaction. The stores run the SQL
 * (SQLite synchronously, PostgreSQL asynchronously); the plan and the
 * refusal are here, once.
 */
import { BraidError } from '../errors.js';

export interface Migration<Db> {
  /** 1, 2, 3 … without gaps, in the order they apply. */
  version: number;
  /** What it changes, for the schema_version row and the logs. */
  name: string;
  apply: Db;
}

/** The migrations' versions run 1..n without a gap or a repeat; returns n. */
export function latestVersion(migrations: readonly Migration<unknown>[]): number {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) {
      throw new Error(`migration ${m.name} is numbered ${m.version}, expected ${i + 1}`);
    }
  });
  return migrations.length;
}

/** A store whose schema this braid cannot use (newer than it knows). */
export class StoreSchemaError extends BraidError {
  constructor(message: string) {
    super('failed_precondition', message);
  }
}

/**
 * The migrations to apply to a database at `current`, or a StoreSchemaError
 * when the database was migrated by a newer braid. `where` names the store
 * (a file, or a URL without its password).
 */
export function pendingMigrations<Db>(
  migrations: readonly Migration<Db>[],
  current: number,
  where: string,
): Migration<Db>[] {
  const latest = latestVersion(migrations);
  if (current > latest) {
    throw new StoreSchemaError(
      `the store at ${where} has schema version ${current}, newer than this braid (${latest}): upgrade braid`,
    );
  }
  return migrations.filter((m) => m.version > current);
}
