#!/usr/bin/env node
// The self-contained bundle (scripts/bundle.mjs, part of `npm run build`)
// starts faster; dist/cli/ (tsc's output) does the same work. A bundle older
// than dist/cli/ is stale (tsc ran alone since), so it is passed over.
import { statSync } from 'node:fs';
import module from 'node:module';

// Node 22.1+ keeps V8's compiled code of braid and its dependencies on disk
// (os.tmpdir()/node-compile-cache; NODE_DISABLE_COMPILE_CACHE=1 turns it
// off): later starts skip most of the parsing. Node 20 has no such cache.
module.enableCompileCache?.();

const mtimeMs = (url) => statSync(url, { throwIfNoEntry: false })?.mtimeMs;
const bundle = new URL('../dist/bundle/braid.mjs', import.meta.url);
const compiled = new URL('../dist/cli/main.js', import.meta.url);
const bundleTime = mtimeMs(bundle);
const useBundle = bundleTime !== undefined && bundleTime >= (mtimeMs(compiled) ?? 0);
const { main } = await import(useBundle ? bundle.href : compiled.href);

await main(process.argv, process.env);
