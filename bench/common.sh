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

# bench_shard NAME PORT [DATABASE [HOST]]: a [[shards]] section on HOST (default 127.0.0.1; a
# directory for the server's Unix-domain socket), to stdout.
bench_shard() {
  printf '[[shards]]\nname = "%s"\nhost = "%s"\nport = %s\n' "$1" "${4:-127.0.0.1}" "$2"
  if [ -n "${3:-}" ]; then printf 'database = "%s"\n' "$3"; fi
}

# bench_vschema: the [routing], [vschema] and [shard_map] sections of the routing benchmarks,
# to stdout: table accounts of keyspace bench hashed on aid over shards s1..s4 (the caller
# defines them), everything else in keyspace main on s1.
bench_vschema() {
  cat <<'CONF'
[routing]
default_keyspace = "main"
[vschema.keyspaces.main]
sharded = false
[vschema.keyspaces.bench]
sharded = true
vindexes.hash_aid = { type = "hash", params = { column_type = "int" } }
tables.accounts = { column_vindexes = [{ column = "aid", vindex = "hash_aid" }] }
[shard_map]
version = 1
keyspaces.main.shards = [{ name = "s1", range = "-" }]
keyspaces.bench.shards = [
  { name = "s1", range = "-40" }, { name = "s2", range = "40-80" },
  { name = "s3", range = "80-c0" }, { name = "s4", range = "c0-" },
]
CONF
}
