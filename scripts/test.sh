#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: provisions the real
# components (scripts/test-env.sh), installs npm packages, checks generated
# code, types and lint, runs unit, integration and e2e tests, and ends with
# one plain line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-env.sh || { echo "test-env: provisioning failed"; echo "0 passed, 1 failed"; exit 1; }
npm ci --no-audit --no-fund || { echo "npm ci failed"; echo "0 passed, 1 failed"; exit 1; }

checks_passed=0
checks_failed=0
check() {
  local name="$1"; shift
  echo "== check: $name"
  if "$@"; then
    checks_passed=$((checks_passed + 1))
  else
    echo "== check failed: $name"
    checks_failed=$((checks_failed + 1))
  fi
}

check "generated code is up to date (npm run generate)" bash scripts/check-generated.sh
check "typecheck" npm run --silent typecheck
check "lint" npm run --silent lint

mkdir -p .test-results
rm -f .test-results/vitest.json
npx vitest run --reporter=default --reporter=json --outputFile.json=.test-results/vitest.json
vitest_status=$?

node scripts/test-summary.mjs .test-results/vitest.json "$checks_passed" "$checks_failed"
summary_status=$?
if [ "$vitest_status" -ne 0 ] || [ "$checks_failed" -ne 0 ] || [ "$summary_status" -ne 0 ]; then
  exit 1
fi
