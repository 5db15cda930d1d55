#!/usr/bin/env bash
# Builds authd four ways and tests each:
#   build       plain: every suite, including those defined for plain
#               builds only: 'cluster', 'packaging' (the Debian package
#               built from a scratch copy of the tree, about a minute) and
#               'newcomer' (README's quick start on a fresh git clone,
#               which scripts/run.sh builds: about a minute)
#   build-asan  ASan+UBSan: every suite
#   build-tsan  ThreadSanitizer (clang if present, else gcc): the
#               'concurrency' suite, where any data race fails a test
#   build-fuzz  (clang only) the libFuzzer targets, each run for
#               FUZZ_SECONDS (default 20) on a scratch copy of its corpus
# and prints one closing line, "N passed, N failed", over all of them.
# Benchmarks are separate: meson test -C build --benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test

# One throwaway PostgreSQL server (in a temp dir, as a non-root user) for
# every suite that runs authd on PostgreSQL; each daemon gets a database
# of its own on it.
pg_dir=$(mktemp -d)
trap 'bash scripts/pg_test_server.sh stop "$pg_dir" >/dev/null 2>&1 || true' EXIT
AUTHD_TEST_PG_URL=$(bash scripts/pg_test_server.sh start "$pg_dir")
export AUTHD_TEST_PG_URL

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

# ThreadSanitizer: the whole tree must build (unit suites included), the
# concurrency suite runs under the 'tsan' setup (first race = exit 66).
tsan_cc=gcc
command -v clang >/dev/null && tsan_cc=clang
[ -d build-tsan ] || CC=$tsan_cc meson setup build-tsan -Db_sanitize=thread \
  -Db_lundef=false -Dbenchmarks=false >/dev/null
ninja -C build-tsan
run_suites build-tsan --setup=tsan --suite concurrency || status=1

# Bounded fuzzing: each libFuzzer target runs for FUZZ_SECONDS on a
# scratch copy of its committed corpus (new inputs land in the copy, so
# CI never changes the tree). A crash counts as one failure; its input is
# kept under build-fuzz/fuzz-artifacts/ to replay with the target.
run_fuzzers() {
  local secs=${FUZZ_SECONDS:-20} corpus name bin scratch log art
  case $secs in ''|*[!0-9]*) echo "FUZZ_SECONDS must be a number" >&2; return 1;; esac
  art=build-fuzz/fuzz-artifacts
  mkdir -p "$art"
  for corpus in tests/fuzz/corpus/*/; do
    name=$(basename "$corpus")
    bin=build-fuzz/tests/fuzz/$name
    if [ ! -x "$bin" ]; then
      echo "fuzz $name: no libFuzzer binary $bin"
      failed=$((failed + 1)); status=1
      continue
    fi
    scratch=$(mktemp -d)
    log=$(mktemp)
    cp -R "$corpus". "$scratch/"
    if ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
       UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
       "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
         -artifact_prefix="$art/$name-" -print_final_stats=1 \
         "$scratch" >"$log" 2>&1; then
      echo "fuzz $name: OK ($(awk '/stat::number_of_executed_units/ {print $2}' "$log") runs in ${secs}s)"
      passed=$((passed + 1))
    else
      echo "fuzz $name: FAIL"
      tail -n 60 "$log"
      failed=$((failed + 1)); status=1
    fi
    rm -rf "$scratch" "$log"
  done
}
if command -v clang >/dev/null; then
  [ -d build-fuzz ] || CC=clang meson setup build-fuzz -Dfuzzing=true \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbenchmarks=false >/dev/null
  ninja -C build-fuzz
  run_fuzzers || status=1
else
  echo "clang not found: no fuzzing run"
fi

# The plain closing line CI reads: suites (plain + sanitized) and fuzzers.
echo "${passed} passed, ${failed} failed"
exit $status
