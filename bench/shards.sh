#!/usr/bin/env bash
# Multi-shard benchmark, in one run on this machine (pgbench custom scripts):
#   point   SELECT by sharding key          direct | pg-router pass-through (1 shard, no VSchema)
#                                            | pg-router over 4 shards in one server (routed)
#                                            | pg-router over 4 shards on 4 servers (routed)
#   top10   SELECT ... ORDER BY ... LIMIT 10 direct | pg-router over 4 servers (scatter, merge)
#   count   SELECT count(*)                  direct | pg-router over 4 servers (scatter, sum)
# "direct" is one PostgreSQL (pg0) holding all rows. The pass-through router and the
# one-server shards (4 databases of pg0, `shards.database`) use that same server, so their
# ratio is the cost of routing alone. The 4 servers hold a quarter of the rows each; on a small
# machine their ratio also carries five PostgreSQL servers sharing the cores.
#
#   BENCH_SECONDS=20   duration of each row
#   BENCH_CLIENTS=16   pgbench clients (-c); -j 2
#   BENCH_ROWS=200000  rows in the table
#   BENCH_MODES        point-select modes, default "simple extended prepared"
#   BENCH_REPEAT=2     point rows: runs per path, taken in turns (direct, pass-through, 1 server,
#                      4 servers, then again) and averaged, so a drift of the machine's speed
#                      during the run falls on every path alike
#   BENCH_SHARD_POOL   pool.max_size per shard of the sharded routers (default 20 / 4)
#   ROUTER_WORKERS     pg-router server.worker_threads (default 1)
#   PG_ROUTER_BIN      pg-router binary (default: cargo build --release)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=common.sh
. "$ROOT/bench/common.sh"
SECONDS_PER_ROW=${BENCH_SECONDS:-20}
CLIENTS=${BENCH_CLIENTS:-16}
ROWS=${BENCH_ROWS:-200000}
MODES=${BENCH_MODES:-simple extended prepared}
REPEAT=${BENCH_REPEAT:-2}
ROUTER_WORKERS=${ROUTER_WORKERS:-1}
POOL=20
SHARD_POOL=${BENCH_SHARD_POOL:-$((POOL / 4))}

bench_prepare

WORK=$(mktemp -d /tmp/pg-router-shards.XXXXXX)
make_dir "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for i in 0 1 2 3 4; do stop_shard "$WORK/pg$i"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# pg0: direct (all rows); pg1..pg4: the shards.
PORTS=()
for i in 0 1 2 3 4; do
  PORTS[i]=$(free_port)
  bench_server "$WORK/pg$i" "${PORTS[i]}"
done

# Both routers get the same total number of backend connections ($POOL): on a small machine
# 4 x $POOL PostgreSQL backends would measure CPU contention, not routing.
PASS_PORT=$(free_port)
{ bench_router_config "$PASS_PORT" "$POOL" "$ROUTER_WORKERS"; bench_shard s0 "${PORTS[0]}"; } >"$WORK/pass.toml"

SHARD_PORT=$(free_port)
{
  bench_router_config "$SHARD_PORT" "$SHARD_POOL" "$ROUTER_WORKERS"
  for i in 1 2 3 4; do bench_shard "s$i" "${PORTS[i]}"; done
  bench_vschema
} >"$WORK/shards.toml"

# The same four shards as 4 databases of pg0.
COLO_PORT=$(free_port)
{
  bench_router_config "$COLO_PORT" "$SHARD_POOL" "$ROUTER_WORKERS"
  for i in 1 2 3 4; do bench_shard "s$i" "${PORTS[0]}" "bench_s$i"; done
  bench_vschema
} >"$WORK/colo.toml"
for i in 1 2 3 4; do
  as_pg psql -X -q -h "$WORK/pg0" -p "${PORTS[0]}" -U bench -d postgres -c "CREATE DATABASE bench_s$i" >/dev/null
done

for cfg in pass shards colo; do
  PG_ROUTER_LOG=warn "$PG_ROUTER_BIN" serve --config "$WORK/$cfg.toml" >"$WORK/$cfg.log" 2>&1 &
  PIDS+=($!)
done
wait_port "$PASS_PORT"
wait_port "$SHARD_PORT"
wait_port "$COLO_PORT"

# The same rows everywhere: direct gets them in one statement, the sharded router gets them
# through multi-row INSERTs it splits by shard.
TABLE="CREATE TABLE accounts (aid bigint PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84))"
export PGPASSWORD=bench-pw
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${PORTS[0]}" -U bench bench -c "$TABLE" \
  -c "INSERT INTO accounts SELECT g, g % 100, (g * 7919) % 100000, '' FROM generate_series(1, $ROWS) g" \
  -c "VACUUM ANALYZE accounts"
for port in "$SHARD_PORT" "$COLO_PORT"; do
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U bench bench -c "$TABLE"
done
awk -v n="$ROWS" 'BEGIN {
  for (s = 1; s <= n; s += 1000) {
    printf "INSERT INTO accounts (aid, bid, abalance, filler) VALUES ";
    e = s + 999; if (e > n) e = n;
    for (g = s; g <= e; g++) printf "%s(%d, %d, %d, %s)", (g > s ? ", " : ""), g, g % 100, (g * 7919) % 100000, "'"''"'";
    print ";";
  }
}' >"$WORK/load.sql"
for port in "$SHARD_PORT" "$COLO_PORT"; do
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U bench bench -f "$WORK/load.sql"
done
for i in 1 2 3 4; do
  as_pg psql -X -q -h "$WORK/pg$i" -p "${PORTS[i]}" -U bench bench -c "VACUUM ANALYZE accounts"
  as_pg psql -X -q -h "$WORK/pg0" -p "${PORTS[0]}" -U bench "bench_s$i" -c "VACUUM ANALYZE accounts"
done

cat >"$WORK/point.sql" <<SQL
\\set aid random(1, $ROWS)
SELECT abalance FROM accounts WHERE aid = :aid;
SQL
echo "SELECT aid, abalance FROM accounts ORDER BY abalance DESC, aid LIMIT 10;" >"$WORK/top10.sql"
echo "SELECT count(*) FROM accounts;" >"$WORK/count.sql"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICKS=$(getconf CLK_TCK)

# run PORT MODE SCRIPT [ROUTER_PID] -> "tps" or "tps/µs-per-tx" (the router's CPU time per transaction)
run() {
  local out before after txs
  before=$( [ -n "${4:-}" ] && cpu_ticks "$4" || echo 0 )
  out=$(pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_PER_ROW" -M "$2" -f "$WORK/$3.sql" \
        -h 127.0.0.1 -p "$1" -U bench bench 2>&1) || { echo failed; return; }
  after=$( [ -n "${4:-}" ] && cpu_ticks "$4" || echo 0 )
  grep -q "number of failed transactions: 0 " <<<"$out" || { echo failed; return; }
  txs=$(awk '/^number of transactions actually processed:/{print $6}' <<<"$out")
  if [ -n "${4:-}" ]; then
    awk -v tps="$(awk '/^tps = /{print $3}' <<<"$out")" -v d=$((after - before)) -v t="$TICKS" -v n="$txs" \
      'BEGIN{printf "%.0f/%.1f", tps, d / t * 1e6 / n}'
  else
    awk '/^tps = /{printf "%.0f", $3}' <<<"$out"
  fi
}
# mean "tps/µs" ... -> their mean, same form ("failed" if any run failed)
mean() {
  printf '%s\n' "$@" | awk -F/ '/failed/ {bad = 1} {t += $1; u += $2; n++; if (NF > 1) us = 1}
    END { if (bad || n == 0) print "failed"; else if (us) printf "%.0f/%.1f", t / n, u / n; else printf "%.0f", t / n }'
}
ratio() { awk -v a="${1%%/*}" -v b="${2%%/*}" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }'; }

echo "pgbench custom scripts: $CLIENTS clients, -j 2, ${SECONDS_PER_ROW}s per run, point rows the mean of" \
  "$REPEAT runs taken in turns, $ROWS rows, pool.max_size $POOL (pass-through) / $SHARD_POOL per shard," \
  "pg-router worker_threads = $ROUTER_WORKERS; $(nproc) cores"
echo
echo "tps/µs: TPS and the router process's CPU time per transaction"
echo
printf '| %-8s | %-8s | %10s | %27s | %27s | %27s |\n' query mode "direct tps" \
  "pass-through tps/µs (÷dir)" "4 shards, 1 server (÷pass)" "4 shards, 4 servers (÷pass)"
printf '|%s|\n' "----------|----------|------------|-----------------------------|-----------------------------|-----------------------------"
row() { printf '| %-8s | %-8s | %10s | %27s | %27s | %27s |\n' "$@"; }
for mode in $MODES; do
  ds=(); ps=(); cs=(); ss=()
  for _ in $(seq "$REPEAT"); do
    ds+=("$(run "${PORTS[0]}" "$mode" point)")
    ps+=("$(run "$PASS_PORT" "$mode" point "${PIDS[0]}")")
    cs+=("$(run "$COLO_PORT" "$mode" point "${PIDS[2]}")")
    ss+=("$(run "$SHARD_PORT" "$mode" point "${PIDS[1]}")")
  done
  d=$(mean "${ds[@]}"); p=$(mean "${ps[@]}"); c=$(mean "${cs[@]}"); s=$(mean "${ss[@]}")
  row point "$mode" "$d" "$p ($(ratio "$p" "$d"))" "$c ($(ratio "$c" "$p"))" "$s ($(ratio "$s" "$p"))"
done
for q in top10 count; do
  d=$(run "${PORTS[0]}" extended "$q")
  s=$(run "$SHARD_PORT" extended "$q" "${PIDS[1]}")
  row "$q" extended "$d" "-" "-" "$s (÷dir $(ratio "$s" "$d"))"
done
