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
import { createRequire } from 'node:module';
import { chmod, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
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

/**
 * grpc-js asks `net.isIPv6(host)` of every address it connects to, IPv4
 * ones included (pick-first, subchannel addresses). Node's first isIPv6
 * call compiles its IPv6 pattern, ~11 ms of a ~40 ms Node start, for an
 * answer a colon decides: every IPv6 address has one. In the bundle,
 * grpc-js's `net` is Node's with isIPv6 and isIP asking for the colon
 * first; their answers are Node's own.
 */
function quickIpv6CheckPlugin() {
  return {
    name: 'braid-quick-ipv6-check',
    setup(builder) {
      builder.onResolve({ filter: /^(node:)?net$/ }, (args) =>
        args.importer.includes('/node_modules/@grpc/grpc-js/')
          ? { path: 'grpc-net', namespace: 'braid' }
          : undefined,
      );
      builder.onLoad({ filter: /^grpc-net$/, namespace: 'braid' }, () => ({
        loader: 'js',
        contents: [
          "const net = require('node:net');",
          "const isIPv6 = (input) => String(input).includes(':') && net.isIPv6(input);",
          // net's other exports through the prototype: copying them would run its lazy getters.
          'module.exports = Object.create(net, {',
          '  isIPv6: { value: isIPv6, enumerable: true },',
          '  isIP: { value: (input) => (net.isIPv4(input) ? 4 : isIPv6(input) ? 6 : 0), enumerable: true },',
          '});',
        ].join('\n'),
      }));
    },
  };
}

/**
 * grpc-js's index.js loads its server (server.js, server-call.js,
 * server-interceptors.js) for every importer; a client command never uses
 * it. In the bundle those two requires run on first use of what they
 * export (Server, ServerInterceptingCall, ...): the coordinator and the
 * agent load them when they make a server, the CLI's calls never do.
 */
function lazyGrpcServerPlugin() {
  const lazy = {
    'const server_1 = require("./server");': 'server_1',
    'var server_interceptors_1 = require("./server-interceptors");': 'server_interceptors_1',
  };
  return {
    name: 'braid-lazy-grpc-server',
    setup(builder) {
      builder.onLoad(
        { filter: /\/node_modules\/@grpc\/grpc-js\/build\/src\/index\.js$/ },
        async (args) => {
          let contents = await readFile(args.path, 'utf8');
          for (const [line, name] of Object.entries(lazy)) {
            // Used only inside the export getters; a grpc-js that changed this fails the build.
            const uses = contents.split(`${name}.`).length - 1;
            if (!contents.includes(line) || uses !== contents.split(`return ${name}.`).length - 1) {
              throw new Error(
                `@grpc/grpc-js index.js: expected \`${line}\` used only in export getters`,
              );
            }
            const path = /require\(("[^"]+")\)/.exec(line)[1];
            contents = contents.replace(
              line,
              `let ${name}$loaded; const ${name} = { get _m() { return (${name}$loaded ??= require(${path})); } };`,
            );
            contents = contents.replaceAll(`return ${name}.`, `return ${name}._m.`);
          }
          return { contents, loader: 'js' };
        },
      );
    },
  };
}

/**
 * Every generated `*_pb` file hydrates its descriptor at import:
 * `fileDesc(base64, deps)` decodes a FileDescriptorProto with protobuf-es's
 * reflection, which first boots google/protobuf/descriptor.proto itself
 * (~35 messages built in the interpreter; about a fifth of `braid status`'s
 * instructions). In the bundle, each decoded FileDescriptorProto is written
 * out as object literals instead, decoded here at build time by the same
 * code (fromBinary + restoreJsonNames, as fileDesc does): the same own
 * fields in the same order, on prototypes holding the same defaults. At run
 * time only the rest of fileDesc runs (dependencies, createFileRegistry), so
 * a command that never reflects on descriptor.proto never boots it.
 */
async function prebuiltDescriptorsPlugin() {
  const { fromBinary } = await import('@bufbuild/protobuf');
  const { base64Decode } = await import('@bufbuild/protobuf/wire');
  const { FileDescriptorProtoSchema } = await import('@bufbuild/protobuf/wkt');
  // Not exported: fileDesc's own helper, from the same copy of the package.
  const protobufDir = dirname(
    createRequire(import.meta.url).resolve('@bufbuild/protobuf/package.json'),
  );
  const { restoreJsonNames } = await import(
    pathToFileURL(join(protobufDir, 'dist', 'esm', 'codegenv2', 'restore-json-names.js')).href
  );
  const literal = (value, prototypes) => {
    if (value === undefined) return 'undefined';
    if (typeof value === 'bigint') return `${value}n`;
    if (value instanceof Uint8Array) return `new Uint8Array(${JSON.stringify([...value])})`;
    if (Array.isArray(value)) return `[${value.map((v) => literal(v, prototypes)).join(',')}]`;
    if (typeof value === 'number' && (!Number.isFinite(value) || Object.is(value, -0))) {
      throw new Error(`descriptor value ${value} has no JSON literal`);
    }
    if (typeof value !== 'object' || value === null) return JSON.stringify(value);
    const fields = Object.keys(value).map(
      (key) => `${JSON.stringify(key)}:${literal(value[key], prototypes)}`,
    );
    const proto = Object.getPrototypeOf(value);
    if (proto === Object.prototype) return `{${fields.join(',')}}`;
    if (Object.getPrototypeOf(proto) !== Object.prototype || typeof value.$typeName !== 'string') {
      throw new Error(`descriptor message ${value.$typeName}: unexpected prototype`);
    }
    // One prototype per message type, shared by its instances, as protobuf-es does.
    if (!prototypes.has(value.$typeName)) {
      prototypes.set(value.$typeName, { name: `p${prototypes.size}`, source: literal(proto) });
    }
    return `m(${prototypes.get(value.$typeName).name},{${fields.join(',')}})`;
  };
  const call = /\bfileDesc\(\s*"([A-Za-z0-9+/=]+)"\s*(,|\))/;
  return {
    name: 'braid-prebuilt-descriptors',
    setup(builder) {
      builder.onLoad(
        {
          filter:
            /(\/src\/gen\/.*_pb\.ts|\/node_modules\/@bufbuild\/protobuf\/dist\/esm\/wkt\/gen\/.*_pb\.js)$/,
        },
        async (args) => {
          const contents = await readFile(args.path, 'utf8');
          const match = call.exec(contents);
          if (!match) return undefined;
          const decoded = fromBinary(FileDescriptorProtoSchema, base64Decode(match[1]));
          decoded.messageType.forEach(restoreJsonNames);
          const prototypes = new Map();
          const tree = literal(decoded, prototypes);
          const protos = [...prototypes.values()].map(
            ({ name, source }) => `const ${name}=${source};`,
          );
          const expression = `(()=>{const m=(p,f)=>Object.assign(Object.create(p),f);${protos.join('')}return ${tree};})()`;
          return {
            // A function replacement: `$&` and kin in the literals are not patterns.
            contents: `import { fileDescFromProto as __braidFileDesc } from 'braid-file-desc';\n${contents.replace(
              match[0],
              () => `__braidFileDesc(${expression}${match[2]}`,
            )}`,
            loader: args.path.endsWith('.ts') ? 'ts' : 'js',
          };
        },
      );
      builder.onResolve({ filter: /^braid-file-desc$/ }, () => ({
        path: 'file-desc',
        namespace: 'braid',
      }));
      builder.onLoad({ filter: /^file-desc$/, namespace: 'braid' }, () => ({
        resolveDir: root,
        loader: 'js',
        contents: [
          "import { createFileRegistry } from '@bufbuild/protobuf';",
          // protobuf-es's fileDesc after its decoding step (codegenv2/file.js).
          'export function fileDescFromProto(root, imports) {',
          '  root.dependency = imports?.map((f) => f.proto.name) ?? [];',
          '  const reg = createFileRegistry(root, (name) => imports?.find((f) => f.proto.name === name));',
          '  return reg.getFile(root.name);',
          '}',
        ].join('\n'),
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
  plugins: [
    lazyRequirePlugin(names),
    withoutProtoLoaderPlugin(),
    quickIpv6CheckPlugin(),
    lazyGrpcServerPlugin(),
    await prebuiltDescriptorsPlugin(),
  ],
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
