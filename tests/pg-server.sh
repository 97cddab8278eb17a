#!/usr/bin/env bash
# A throwaway PostgreSQL server for a test, on loopback, never the system's
# service.  Usage: pg-server.sh MODE DIR
#   start    initdb into DIR/data (first time), start on a free port (the
#            same port again after a stop) with its socket in DIR; prints
#            the postgresql:// URI once it accepts connections
#   stop     fast shutdown (the server goes away cleanly)
#   kill     SIGKILL to the postmaster and its backends (a crash: the next
#            start recovers from the WAL)
#   cleanup  stop it if it runs and remove DIR
# Exit 77 (with "SKIP: ...") when PostgreSQL is not installed.
# As root, initdb refuses to run: the server then runs as the 'postgres'
# user that Debian's package creates.
set -euo pipefail

mode=${1:?mode: start, stop, kill or cleanup}
dir=${2:?the folder of the server}
owner=${3:-}

# PG_BINDIR picks a PostgreSQL (else Debian's newest, else the PATH's)
bindir=
if [[ -n ${PG_BINDIR:-} ]]; then
  [[ -x $PG_BINDIR/initdb && -x $PG_BINDIR/pg_ctl ]] && bindir=$PG_BINDIR
else
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb && -x $d/pg_ctl ]] && bindir=$d
  done
fi
if [[ -z $bindir && -z ${PG_BINDIR:-} ]]; then
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null &&
    bindir=$(dirname "$(command -v initdb)")
fi
if [[ -z $bindir ]]; then
  echo "SKIP: PostgreSQL's initdb and pg_ctl are not installed${PG_BINDIR:+ in $PG_BINDIR} (Debian: postgresql-15)"
  exit 77
fi

as_server() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
  echo "SKIP: running as root and there is no 'postgres' user to run the server as"
  exit 77
fi

data=$dir/data
user=blip_test

postmaster_pid() {
  [[ -f $data/postmaster.pid ]] && head -n 1 "$data/postmaster.pid"
}

case $mode in
start)
  mkdir -p "$dir"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$dir"
  fi
  if [[ ! -f $data/PG_VERSION ]]; then
    as_server "$bindir/initdb" -D "$data" -U "$user" --auth=trust -E UTF8 --no-locale \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  if [[ ! -f $dir/port ]]; then
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
      >"$dir/port"
  fi
  port=$(cat "$dir/port")
  # small buffers: the machine is shared; fsync stays on, the tests
  # check what survives a crash
  as_server "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 -s \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c shared_buffers=32MB -c max_connections=40" \
    start >&2 || { tail -n 20 "$dir/server.log" >&2; exit 1; }
  if [[ -n $owner && ! -f $dir/watcher ]]; then
    touch "$dir/watcher"
    # detached from the test's output, so the test does not wait for it
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" cleanup "$3"' \
      watcher "$owner" "$(readlink -f "$0")" "$dir" </dev/null >/dev/null 2>&1 &
  fi
  echo "postgresql://$user@127.0.0.1:$port/postgres"
  ;;
stop)
  if [[ -f $data/postmaster.pid ]]; then
    as_server "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 -s stop >&2
  fi
  ;;
kill)
  pid=$(postmaster_pid || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    # the backends first (by pid, the postmaster's children), then it
    children=$(ps -o pid= --ppid "$pid" || true)
    for c in $children; do kill -9 "$c" 2>/dev/null || true; done
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    for c in $children; do
      while kill -0 "$c" 2>/dev/null; do sleep 0.1; done
    done
  fi
  ;;
cleanup)
  pid=$(postmaster_pid || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    as_server "$bindir/pg_ctl" -D "$data" -m immediate -w -t 60 -s stop >&2 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "pg-server.sh: unknown mode $mode (start, stop, kill, cleanup)" >&2
  exit 2
  ;;
esac
