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
