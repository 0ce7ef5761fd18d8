#!/usr/bin/env bash
# Sets everything up, then runs every check: types, lint, layer order,
# formatting and the test suite
# (against the real libvirt test driver, real HTTP and WebSocket clients).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

echo "== typecheck"
npm run --silent typecheck
echo "== lint"
npm run --silent lint
echo "== layers (import order and cycles, see .dependency-cruiser.cjs)"
npm run --silent lint:deps
echo "== format"
npm run --silent format:check
echo "== tests"
report=$(mktemp)
status=0
node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile.json="$report" || status=$?
# One plain closing line that any CI can read.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' "$report" || true
rm -f "$report"
exit "$status"
