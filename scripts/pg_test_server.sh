#!/bin/sh
# A throwaway PostgreSQL 15 cluster for the tests of the PostgreSQL store
# backend: it listens only on 127.0.0.1 (a free port) and a unix socket
# inside its directory, trusts every local connection, and keeps fsync on
# so that durability is measured as in production.
#
#   scripts/pg_test_server.sh start DIR         prints a connection URL
#   scripts/pg_test_server.sh createdb DIR NAME prints the new database's URL
#   scripts/pg_test_server.sh stop DIR          stops it and removes DIR
#   scripts/pg_test_server.sh halt DIR          stops the server, keeps DIR
#   scripts/pg_test_server.sh resume DIR        starts it again, same port
#
# Works as a normal user and as root (then the server runs as the
# `postgres` user, which must be able to reach DIR: not under /root).
set -eu

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

usage() {
  echo "usage: $0 start DIR | createdb DIR NAME | stop DIR | halt DIR |" \
    "resume DIR" >&2
  exit 2
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

url_of() {
  # $1 DIR, $2 database name
  port=$(cat "$1/port")
  echo "postgresql://postgres@127.0.0.1:$port/$2"
}

# Starts the server of DIR on the port in DIR/port.
launch() {
  port=$(cat "$1/port")
  as_owner "$PGBIN/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port \
-c unix_socket_directories=$1 -c fsync=on -c synchronous_commit=on \
-c max_connections=300 -c shared_buffers=64MB" start >/dev/null 2>&1
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2

case "$cmd" in
start)
  [ -e "$dir/data" ] && { echo "$dir/data exists" >&2; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
  fi
  as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust \
    -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  # A port that was free a moment ago may be taken by the time the
  # server binds it: try a few.
  for try in 1 2 3 4 5; do
    port=$(free_port)
    echo "$port" >"$dir/port"
    if launch "$dir"; then
      url_of "$dir" postgres
      exit 0
    fi
  done
  cat "$dir/server.log" >&2 || true
  exit 1
  ;;
createdb)
  [ $# -eq 3 ] || usage
  name=$3
  port=$(cat "$dir/port")
  as_owner "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$name"
  url_of "$dir" "$name"
  ;;
halt)
  as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
resume)
  launch "$dir" || { cat "$dir/server.log" >&2; exit 1; }
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 ||
      true
  fi
  rm -rf "$dir"
  ;;
*)
  usage
  ;;
esac
