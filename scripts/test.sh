#!/usr/bin/env bash
# Builds authd twice (plain, and with ASan+UBSan) and runs every test
# suite in both. Benchmarks are separate: meson test -C build --benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test

passed=0
failed=0
# Runs one meson test pass and adds its counts to the totals.
run_suites() {
  local dir=$1; shift
  local log rc=0
  log=$(mktemp)
  meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" | tee "$log" || rc=$?
  passed=$((passed + $(awk '/^Ok:/ {print $2}' "$log")))
  failed=$((failed + $(awk '/^Fail:/ {print $2}' "$log") + $(awk '/^Timeout:/ {print $2}' "$log")))
  rm -f "$log"
  return $rc
}

status=0
[ -d build ] || meson setup build >/dev/null
ninja -C build
run_suites build || status=1

[ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined \
  -Db_lundef=false -Dbenchmarks=false >/dev/null
ninja -C build-asan
run_suites build-asan --setup=asan || status=1

# The plain closing line CI reads: suites (plain + sanitized).
echo "${passed} passed, ${failed} failed"
exit $status
