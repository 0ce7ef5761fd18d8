#!/usr/bin/env bash
# Sets everything up, then runs every check: types, lint, layer order,
# formatting and the test suite, under the Node.js on PATH and under Node.js 24
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
echo "== test guests"
# KVM or TCG for the guests the tests boot, probed once here rather than
# beside other test files (a failed probe is tried again by the first test that boots one).
node_modules/.bin/tsx scripts/guest-accel.ts || echo "could not choose how test guests run (see above)"
echo "== tests"
# The suite runs twice: under the Node.js on PATH, then under Node.js 24
# (Active LTS, fetched by setup.sh into .cache/node24), whose OpenSSL refuses
# what older ones accept. Either run failing fails the command.
status=0
passed=0 failed=0 skipped=0
failures=""
run_suite() {
  local version report console rc=0 start=$SECONDS counts p f s failed_here
  version=$(node --version)
  echo "== tests under Node.js $version ($(command -v node))"
  report=$(mktemp)
  console=$(mktemp)
  node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile.json="$report" 2>&1 | tee "$console" || rc=$?
  counts=$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(r.numPassedTests, r.numFailedTests, r.numPendingTests + r.numTodoTests);
  ' "$report" 2>/dev/null) || counts=""
  failed_here=$(node scripts/report-failures.mjs "$report" "$console" "$version" 2>/dev/null) || failed_here=""
  [ -z "$failed_here" ] || failures+="$failed_here"$'\n'
  rm -f "$report" "$console"
  if [ -n "$counts" ]; then
    read -r p f s <<<"$counts"
    echo "tests under Node.js $version: $p passed, $f failed, $s skipped, in $((SECONDS - start)) s"
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
  else
    echo "tests under Node.js $version: no report (vitest exited with $rc)"
    [ "$rc" -ne 0 ] || rc=1
  fi
  [ "$rc" -eq 0 ] || status=$rc
}

run_suite
node24=$PWD/.cache/node24/bin
if [ "$(node -p 'process.versions.node.split(".")[0]')" = 24 ]; then
  echo "== tests under Node.js 24: the run above already used $(node --version)"
elif [ -x "$node24/node" ]; then
  PATH="$node24:$PATH" run_suite
else
  echo "== tests under Node.js 24: $node24/node is missing (scripts/setup.sh fetches it)"
  status=1
fi

# What failed, again at the end: a CI log that keeps only its last lines
# still names every failing test and the first lines of its error.
if [ -n "$failures" ]; then
  echo "== what failed"
  printf '%s' "$failures"
fi
# One plain closing line that any CI can read (both runs added up).
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
