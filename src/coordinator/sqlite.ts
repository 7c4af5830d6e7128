/**
 * Opens the coordinator's SQLite database (`<dataDir>/braid.db`) the same
 * way for every module and process that uses it: the file is created owner
 * read/write only (SQLite gives its -wal and -shm files the same mode), WAL
 * lets the coordinator and `braid tokens` use it at once, and a writer
 * waits for another's lock instead of failing.
 */
import Database from 'better-sqlite3';
import { closeSync, openSync } from 'node:fs';

export function openDatabase(file: string): Database.Database {
  closeSync(openSync(file, 'a', 0o600));
  const db = new Database(file, { timeout: 5000 });
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  return db;
}
