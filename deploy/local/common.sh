# Shared by up.sh, down.sh and bench/pgbench.sh. PostgreSQL refuses to run as root, so as root
# its tools run as the `postgres` OS user.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

ensure_postgres() {
  if [ ! -x "$PG_BIN/postgres" ] || ! command -v psql >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
      echo "PostgreSQL 15 is missing: install postgresql-15 (Debian) and retry" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
  fi
}

# make_dir DIR: a directory the postgres user can write.
make_dir() {
  mkdir -p "$1"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$1"; chmod 755 "$1"; fi
}

# start_shard DATA_DIR PORT SUPERUSER PASSWORD: initdb (SCRAM over TCP) and start.
start_shard() {
  local data=$1 port=$2 user=$3 password=$4
  local pwfile
  pwfile=$(mktemp)
  printf '%s' "$password" >"$pwfile"
  chmod 644 "$pwfile"
  as_pg "$PG_BIN/initdb" -D "$data" -U "$user" --pwfile="$pwfile" -A scram-sha-256 --auth-local=trust \
    -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  rm -f "$pwfile"
  as_pg sh -c "cat >> '$data/postgresql.auto.conf'" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
max_connections = 200
max_prepared_transactions = 64
wal_level = logical
CONF
  as_pg "$PG_BIN/pg_ctl" -D "$data" -w -t 60 -l "$data/log" start >/dev/null
}

stop_shard() {
  as_pg "$PG_BIN/pg_ctl" -D "$1" -m fast stop >/dev/null 2>&1 || true
}

# wait_port PORT: until something accepts connections there (at most 30 s).
wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing is listening on 127.0.0.1:$1" >&2
  return 1
}
