#!/usr/bin/env bash
# Regenerate the protoc-gen-es output in a scratch dir and compare it with the
# committed src/gen and test/gen: generated code is never edited by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
npx buf generate -o "$scratch"
npx buf generate --template buf.gen.test.yaml -o "$scratch"
diff -ru src/gen "$scratch/src/gen"
diff -ru test/gen "$scratch/test/gen"
