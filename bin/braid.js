#!/usr/bin/env node
// The self-contained bundle (scripts/bundle.mjs, part of `npm run build`)
// starts faster; dist/cli/ (tsc's output) does the same work. A bundle older
// than dist/cli/ is stale (tsc ran alone since), so it is passed over.
import { statSync } from 'node:fs';

const mtimeMs = (url) => statSync(url, { throwIfNoEntry: false })?.mtimeMs;
const bundle = new URL('../dist/bundle/braid.mjs', import.meta.url);
const compiled = new URL('../dist/cli/main.js', import.meta.url);
const bundleTime = mtimeMs(bundle);
const useBundle = bundleTime !== undefined && bundleTime >= (mtimeMs(compiled) ?? 0);
const { main } = await import(useBundle ? bundle.href : compiled.href);

await main(process.argv, process.env);
