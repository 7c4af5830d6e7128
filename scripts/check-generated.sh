#!/usr/bin/env bash
# Regenerate the protoc-gen-es output in a scratch dir and compare it with the
# committed src/gen and test/gen: generated code is never edited by hand.
# buf.gen.yaml covers proto/ (src/gen/braid) and the vendored BuildKit
# progress messages in proto-vendor/ (src/gen/moby).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
npx buf generate -o "$scratch"
npx buf generate --template buf.gen.test.yaml -o "$scratch"
test -f "$scratch/src/gen/moby/buildkit/v1/control_pb.ts" || {
  echo "buf.gen.yaml no longer generates proto-vendor/ (src/gen/moby)" >&2
  exit 1
}
diff -ru src/gen "$scratch/src/gen"
diff -ru test/gen "$scratch/test/gen"
