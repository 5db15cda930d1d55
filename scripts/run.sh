#!/usr/bin/env bash
# Builds authd and runs it on its embedded default: ./authd-data (LMDB, a
# fresh CA on first start), HTTPS 127.0.0.1:8443, HTTP 127.0.0.1:8080,
# check listener 127.0.0.1:8181. Extra arguments go to `authd serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
exec ./build/authd/authd serve "$@"
