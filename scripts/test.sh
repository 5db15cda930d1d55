#!/usr/bin/env bash
# Builds authd twice (plain, and with ASan+UBSan) and runs every test
# suite in both: unit, integration (and the others as they exist).
# Benchmarks are separate: meson test -C build --benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test

[ -d build ] || meson setup build >/dev/null
ninja -C build
meson test -C build --print-errorlogs --num-processes 2

[ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined \
  -Db_lundef=false -Dbenchmarks=false >/dev/null
ninja -C build-asan
meson test -C build-asan --setup=asan --print-errorlogs --num-processes 2
