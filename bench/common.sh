# Shared by the bench scripts (sourced, after ROOT is set): the local cluster helpers plus the
# steps every bench starts with.
# shellcheck source=../deploy/local/common.sh
. "$ROOT/deploy/local/common.sh"

# Makes sure PostgreSQL is installed and PG_ROUTER_BIN names a pg-router binary (a release
# build of this checkout unless the caller set one).
bench_prepare() {
  ensure_postgres
  if [ -z "${PG_ROUTER_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p router --bin pg-router)
    PG_ROUTER_BIN=$ROOT/target/release/pg-router
  fi
}

# bench_server DIR PORT: a PostgreSQL server with user bench (password bench-pw) and an empty
# database bench.
bench_server() {
  start_shard "$1" "$2" bench bench-pw
  as_pg psql -X -q -h "$1" -p "$2" -U bench -d postgres -c "CREATE DATABASE bench" >/dev/null
}

# bench_router_config PORT POOL_SIZE WORKERS [AUTH]: the start of a pg-router config (no
# shards) listening on PORT, for user bench (password bench-pw; AUTH, e.g. trust, if given) on
# database bench, with the control store off. Printed to stdout; the caller adds [[shards]].
bench_router_config() {
  cat <<CONF
databases = ["bench"]
[server]
listen = "127.0.0.1:$1"
worker_threads = $3
[pool]
max_size = $2
[[users]]
name = "bench"
password = "bench-pw"
${4:+auth = \"$4\"}
# The data path is what is measured; the embedded control store only serves routing changes.
[control]
mode = "off"
CONF
}

# bench_shard NAME PORT [DATABASE]: a [[shards]] section on 127.0.0.1, to stdout.
bench_shard() {
  printf '[[shards]]\nname = "%s"\nhost = "127.0.0.1"\nport = %s\n' "$1" "$2"
  if [ -n "${3:-}" ]; then printf 'database = "%s"\n' "$3"; fi
}
