#!/usr/bin/env node
/**
 * `npm run build` (after tsc): one self-contained braid in dist/bundle/ —
 * braid.mjs (exports main(argv, env), as dist/cli/main.js does) and its
 * chunks, our code and the npm dependencies together. Each command's
 * `import('./x-run.js')` stays a separate chunk, loaded on use. Only native
 * modules stay outside: better-sqlite3 (the coordinator's store, resolved
 * from node_modules when the coordinator runs), cpu-features and ssh2's
 * sshcrypto.node (both optional: ssh2 falls back to JS). The agent needs
 * neither, which is why `braid farm add` can ship this directory alone;
 * cli.mjs runs it there.
 */
import { build } from 'esbuild';
import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'bundle');
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'));

/** Native modules: never bundled; the agent's code path must not import them. */
const NATIVE = ['better-sqlite3', 'cpu-features', '*.node'];

/**
 * Packages our sources load on demand through createRequire(import.meta.url)
 * (yaml only with --config or --from-spec, pino-pretty only on a terminal).
 * A plain createRequire would look for them in node_modules, which a host
 * installed by `braid farm add` does not have. Each is bundled on its own
 * as lazy/NAME.cjs, outside the chunks, so a command that never needs it
 * does not even parse it (yaml alone is ~290 KiB); in the bundle,
 * createRequire is ours and answers those names from there.
 */
async function lazyRequires() {
  const names = new Set();
  const pattern = /(?:requireLazily|createRequire\(import\.meta\.url\))\(\s*['"]([^'"]+)['"]\s*\)/g;
  const walk = async (dir) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const file = join(dir, entry.name);
      if (entry.isDirectory()) await walk(file);
      else if (entry.name.endsWith('.ts')) {
        for (const match of (await readFile(file, 'utf8')).matchAll(pattern)) names.add(match[1]);
      }
    }
  };
  await walk(join(root, 'src'));
  return [...names].sort();
}

/** lazy/NAME.cjs: the package NAME with its dependencies, for a require() at run time. */
function lazyFileName(name) {
  return `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.cjs`;
}

const lazyPath = (name) => join(outdir, 'lazy', lazyFileName(name));

/**
 * grpc-js requires @grpc/proto-loader (and with it protobufjs, long and
 * lodash.camelcase, ~300 KiB) only to serve its channelz and ORCA services,
 * which braid never adds to a server; bundled, every gRPC command would
 * still parse them at start. In the bundle that require fails, saying so.
 */
function withoutProtoLoaderPlugin() {
  return {
    name: 'braid-without-proto-loader',
    setup(builder) {
      builder.onResolve({ filter: /^@grpc\/proto-loader$/ }, (args) =>
        args.importer.includes('/node_modules/@grpc/grpc-js/')
          ? { path: 'no-proto-loader', namespace: 'braid' }
          : undefined,
      );
      builder.onLoad({ filter: /^no-proto-loader$/, namespace: 'braid' }, () => ({
        loader: 'js',
        contents:
          "throw new Error('@grpc/proto-loader is not in the braid bundle: gRPC channelz and ORCA services are not served');",
      }));
    },
  };
}

function lazyRequirePlugin(names) {
  const srcDir = join(root, 'src') + '/';
  return {
    name: 'braid-lazy-require',
    setup(builder) {
      builder.onResolve({ filter: /^node:module$/ }, (args) =>
        args.importer.startsWith(srcDir) ? { path: 'lazy-require', namespace: 'braid' } : undefined,
      );
      builder.onLoad({ filter: /^lazy-require$/, namespace: 'braid' }, () => ({
        resolveDir: root,
        loader: 'js',
        contents: [
          "import { existsSync } from 'node:fs';",
          "import { createRequire as nodeCreateRequire } from 'node:module';",
          "import { fileURLToPath } from 'node:url';",
          `const lazyFiles = ${JSON.stringify(Object.fromEntries(names.map((n) => [n, lazyFileName(n)])))};`,
          // This code lands in braid.mjs or in a chunk one directory down.
          'const lazyFile = (file) =>',
          '  [`./lazy/${file}`, `../lazy/${file}`].map((path) => new URL(path, import.meta.url)).find((url) => existsSync(url));',
          'export function createRequire(url) {',
          '  const fallback = nodeCreateRequire(url);',
          '  return (id) => {',
          '    if (!Object.hasOwn(lazyFiles, id)) return fallback(id);',
          '    const file = lazyFile(lazyFiles[id]);',
          '    if (file === undefined) throw new Error(`braid bundle is incomplete: lazy/${lazyFiles[id]} is missing`);',
          '    return fallback(fileURLToPath(file));',
          '  };',
          '}',
        ].join('\n'),
      }));
    },
  };
}

// CommonJS dependencies call require() and read __dirname/__filename (ssh2's
// poly1305 WASM loader); ES modules have none of them, so every output file
// gets its own.
const banner = [
  "import { createRequire as __braidCreateRequire } from 'node:module';",
  "import { dirname as __braidDirname } from 'node:path';",
  "import { fileURLToPath as __braidFileURLToPath } from 'node:url';",
  'const require = __braidCreateRequire(import.meta.url);',
  'const __filename = __braidFileURLToPath(import.meta.url);',
  'const __dirname = __braidDirname(__filename);',
].join(' ');

const names = await lazyRequires();
const result = await build({
  absWorkingDir: root,
  entryPoints: { braid: 'src/cli/main.ts' },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  external: NATIVE,
  banner: { js: banner },
  // src/version.ts reads package.json next to src/ or dist/; the bundle carries it.
  define: { BRAID_BUNDLED_VERSION: JSON.stringify(pkg.version) },
  plugins: [lazyRequirePlugin(names), withoutProtoLoaderPlugin()],
  sourcemap: 'linked',
  legalComments: 'linked',
  metafile: true,
  logLevel: 'warning',
  // protobufjs's inquire() uses eval to reach require on purpose.
  logOverride: { 'direct-eval': 'silent' },
  write: false,
});

// Tests and other shells may be running braid from this directory right now:
// each file is replaced by a rename (never seen half-written), and files of
// the previous bundle go only after the new one is complete.
const written = new Set();
const replaceFile = async (file, contents) => {
  await mkdir(dirname(file), { recursive: true });
  const next = `${file}.${process.pid}.tmp`;
  await writeFile(next, contents);
  await rename(next, file);
  written.add(file);
};
for (const output of result.outputFiles) await replaceFile(output.path, output.contents);
for (const name of names) {
  const lazy = await build({
    absWorkingDir: root,
    stdin: { contents: `module.exports = require(${JSON.stringify(name)});`, resolveDir: root },
    outfile: lazyPath(name),
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    legalComments: 'inline',
    logLevel: 'warning',
    write: false,
  });
  for (const output of lazy.outputFiles) await replaceFile(output.path, output.contents);
}

// The far side's package.json: what `braid farm add` installs, and its version.
await replaceFile(
  join(outdir, 'package.json'),
  `${JSON.stringify({ name: pkg.name, version: pkg.version, private: true, type: 'module', engines: pkg.engines }, null, 2)}\n`,
);
// Runs braid from this directory alone (`node cli.mjs agent ...`): what a farm host starts.
await replaceFile(
  join(outdir, 'cli.mjs'),
  [
    '#!/usr/bin/env node',
    "import module from 'node:module';",
    '',
    '// Node 22.1+: compiled code cached on disk for the next start (as bin/braid.js does).',
    'module.enableCompileCache?.();',
    "const { main } = await import('./braid.mjs');",
    '',
    'await main(process.argv, process.env);',
    '',
  ].join('\n'),
);
await chmod(join(outdir, 'cli.mjs'), 0o755);
const removeStale = async (dir) => {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = join(dir, entry.name);
    if (entry.isDirectory()) await removeStale(file);
    else if (!written.has(file)) await rm(file, { force: true });
  }
};
await removeStale(outdir);

// Every output must at least parse (a banner name clashing with a bundled one would not).
const outputs = Object.keys(result.metafile.outputs).filter((file) => file.endsWith('.mjs'));
const lazyOutputs = names.map((name) => relative(root, lazyPath(name)));
const exec = promisify(execFile);
await Promise.all(
  [...outputs, ...lazyOutputs].map((file) =>
    exec(process.execPath, ['--check', join(root, file)]).catch((err) => {
      throw new Error(`${file} does not parse: ${err.stderr || err.message}`);
    }),
  ),
);
// `braid agent` must start where only this directory exists (`braid farm add`):
// nothing it loads at start may import a native module.
const staticClosure = (file, seen = new Set()) => {
  if (seen.has(file)) return seen;
  seen.add(file);
  for (const link of result.metafile.outputs[file]?.imports ?? []) {
    if (link.kind === 'import-statement') staticClosure(link.path, seen);
  }
  return seen;
};
const entry = relative(root, join(outdir, 'braid.mjs'));
const agentChunk = outputs.find((file) => /\/agent-run-[^/]*\.mjs$/.test(file));
if (agentChunk === undefined) throw new Error('no agent-run chunk in the bundle');
const agentNeeds = [...staticClosure(agentChunk, staticClosure(entry))].filter((path) =>
  NATIVE.some((name) => path === name || (name.startsWith('*') && path.endsWith(name.slice(1)))),
);
if (agentNeeds.length > 0) {
  throw new Error(`braid agent would load native modules at start: ${agentNeeds.join(', ')}`);
}

const bytes = outputs.reduce((sum, file) => sum + result.metafile.outputs[file].bytes, 0);
process.stdout.write(
  `bundle: ${relative(root, outdir)}/braid.mjs and ${outputs.length - 1} chunks, ` +
    `${(bytes / 1024 / 1024).toFixed(1)} MiB (lazy requires: ${names.join(', ') || 'none'})\n`,
);
