/**
 * Files on disk and in memory as tests need them: every file under a
 * directory, the ones that hold a string (gzip or not), and a small build
 * context as a tar stream.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

/** Every file under `dir`, recursively, sorted. */
export async function filesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await filesUnder(path)));
    else if (entry.isFile()) found.push(path);
  }
  return found.sort();
}

/** Files under `dir` whose bytes (or gunzipped bytes) contain `needle`. */
export async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const wanted = Buffer.from(needle);
  const hits: string[] = [];
  for (const file of await filesUnder(dir)) {
    const bytes = await readFile(file);
    let found = bytes.includes(wanted);
    if (!found && bytes[0] === 0x1f && bytes[1] === 0x8b) {
      try {
        found = gunzipSync(bytes).includes(wanted);
      } catch {
        // Not a whole gzip stream: the raw bytes were searched.
      }
    }
    if (found) hits.push(file);
  }
  return hits;
}

/** A build context of a few files (name -> content) as a tar stream. */
export async function contextTar(files: Record<string, string>): Promise<Readable> {
  const tar = pack();
  for (const [name, body] of Object.entries(files)) tar.entry({ name, mtime: new Date(0) }, body);
  tar.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of tar) chunks.push(chunk as Buffer);
  return Readable.from([Buffer.concat(chunks)]);
}
