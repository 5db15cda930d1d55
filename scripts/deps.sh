#!/usr/bin/env bash
# Installs the Debian packages authd needs, only those missing.
#   deps.sh build   what building and running authd needs
#   deps.sh broker  that plus mosquitto and its clients (README's quick start)
#   deps.sh test    that plus what the test suites and benchmarks drive
set -euo pipefail

build_pkgs=(gcc pkg-config meson ninja-build libssl-dev libmicrohttpd-dev
  libgnutls28-dev liblmdb-dev libjansson-dev libargon2-dev openssl
  libcurl4-openssl-dev mosquitto-dev libmosquitto-dev libpq-dev libcoap3-dev
  python3)  # python3: scripts/embed.py compiles docs/openapi.json in
test_pkgs=(curl python3 python3-pytest python3-cryptography python3-jwt python3-jsonschema
  clang libclang-rt-14-dev valgrind wrk golang-cfssl nginx-light lmdb-utils
  mosquitto mosquitto-clients python3-paho-mqtt libjwt-dev
  haproxy postgresql-15 postgresql-client-15 libcoap3-bin
  debhelper dpkg-dev fakeroot man-db groff-base systemd)

broker_pkgs=(mosquitto mosquitto-clients)

want=("${build_pkgs[@]}")
case ${1:-build} in
  build) ;;
  broker) want+=("${broker_pkgs[@]}") ;;
  test) want+=("${test_pkgs[@]}") ;;
  *) echo "usage: deps.sh [build|broker|test]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
