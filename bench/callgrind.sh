#!/usr/bin/env bash
# User-space instructions per transaction of pg-router (and PgBouncer, for reference) under
# callgrind: a deterministic measure of per-message cost, unlike wall-clock time on a shared
# machine. Kernel time (the socket calls) is not counted; it is about the same for both.
#
#   CG_MODES="simple extended prepared"   pgbench -M modes
#   CG_WORKLOAD=select-only               or tpcb-like, or point: a SELECT by key on a 10k-row
#                                         table through pg-router as a pass-through and routed
#                                         over 4 shards (4 databases of the one server)
#   CG_TX=1000                            transactions per client (4 clients) after a warm-up
#   CG_BOUNCER=1                          also measure PgBouncer (transaction mode)
#   PG_ROUTER_BIN                         default: cargo build --release
#   CG_KEEP=DIR                           keep each profile there (callgrind_annotate DIR/...)
# Needs valgrind (apt-get install valgrind). Trust auth on both poolers keeps SCRAM's key
# derivation out of the counts; the warm-up opens the backend connections before counting.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=common.sh
. "$ROOT/bench/common.sh"
MODES=${CG_MODES:-simple extended prepared}
WORKLOAD=${CG_WORKLOAD:-select-only}
TX=${CG_TX:-1000}
CLIENTS=4
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
bench_prepare

WORK=$(mktemp -d /tmp/pg-router-callgrind.XXXXXX)
make_dir "$WORK"
PG_PORT=$(free_port)
cleanup() {
  pkill -f "valgrind.*$WORK" 2>/dev/null || true
  stop_shard "$WORK/pg"
  rm -rf "$WORK"
}
trap cleanup EXIT
bench_server "$WORK/pg" "$PG_PORT"
case $WORKLOAD in
  select-only) FLAG=-S ;;
  tpcb-like) FLAG= ;;
  point)
    # Every shard database holds every row: the routed query finds its row wherever it goes.
    for db in bench bench_s1 bench_s2 bench_s3 bench_s4; do
      [ "$db" = bench ] || as_pg psql -X -q -h "$WORK/pg" -p "$PG_PORT" -U bench -d postgres -c "CREATE DATABASE $db" >/dev/null
      as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/pg" -p "$PG_PORT" -U bench -d "$db" \
        -c "CREATE TABLE accounts (aid bigint PRIMARY KEY, abalance int NOT NULL)" \
        -c "INSERT INTO accounts SELECT g, g % 1000 FROM generate_series(1, 10000) g" -c "VACUUM ANALYZE accounts" >/dev/null
    done
    printf '\\set aid random(1, 10000)\nSELECT abalance FROM accounts WHERE aid = :aid;\n' >"$WORK/point.sql"
    FLAG="-f $WORK/point.sql" ;;
  *) echo "unknown CG_WORKLOAD $WORKLOAD" >&2; exit 1 ;;
esac
[ "$WORKLOAD" = point ] || PGPASSWORD=bench-pw pgbench -q -i -s 1 -h 127.0.0.1 -p "$PG_PORT" -U bench bench >/dev/null 2>&1

# measure NAME PORT CONTROL... : warm up, zero the counters, run, dump; prints instructions/tx.
# CONTROL is the command prefix that reaches the callgrind process (as_pg for PgBouncer).
measure() {
  local name=$1 port=$2 mode=$3; shift 3
  # Four times the measured clients in the warm-up: every backend connection the run can need
  # (up to $CLIENTS per shard) is open before counting starts.
  pgbench -n -c $((CLIENTS * 4)) -j 1 -t 200 -M "$mode" $FLAG -h 127.0.0.1 -p "$port" -U bench bench >/dev/null
  "$@" callgrind_control -z >/dev/null 2>&1
  pgbench -n -c "$CLIENTS" -j 1 -t "$TX" -M "$mode" $FLAG -h 127.0.0.1 -p "$port" -U bench bench >/dev/null
  "$@" callgrind_control -d >/dev/null 2>&1
  local out ir
  out=$(ls -t "$WORK"/cg.*.1 | head -1)
  ir=$(awk '/^summary:/ {print $2; exit}' "$out")
  printf '%-10s %-9s %-12s %8d instructions/tx\n' "$name" "$mode" "$WORKLOAD" $((ir / (TX * CLIENTS)))
  if [ -n "${CG_KEEP:-}" ]; then
    mkdir -p "$CG_KEEP" && cp "$out" "$CG_KEEP/$name-$mode-$WORKLOAD.cg"
  fi
  rm -f "$WORK"/cg.*
}

# router NAME MODE [routed]: pg-router under callgrind, as a pass-through to database bench or
# routing over the four shard databases.
router() {
  local port
  port=$(free_port)
  {
    bench_router_config "$port" 8 1 trust
    if [ -n "${3:-}" ]; then
      for i in 1 2 3 4; do bench_shard "s$i" "$PG_PORT" "bench_s$i"; done
      bench_vschema
    else
      bench_shard s0 "$PG_PORT"
    fi
  } >"$WORK/router.toml"
  PG_ROUTER_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "$PG_ROUTER_BIN" serve --config "$WORK/router.toml" >"$WORK/router.log" 2>&1 &
  vp=$!
  wait_port "$port"
  measure "$1" "$port" "$2" env
  kill -INT "$vp"; wait "$vp" 2>/dev/null || true
}

for mode in $MODES; do
  router pg-router "$mode"
  [ "$WORKLOAD" = point ] && router routed "$mode" routed

  if [ "${CG_BOUNCER:-0}" = 1 ] && [ "$mode" != prepared ] && [ "$WORKLOAD" != point ] && command -v pgbouncer >/dev/null; then
    port=$(free_port)
    as_pg sh -c "cat > '$WORK/pgbouncer.ini'" <<CONF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench user=bench password=bench-pw
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = 8
unix_socket_dir =
logfile = $WORK/pgbouncer.log
CONF
    as_pg sh -c "echo '\"bench\" \"\"' > '$WORK/userlist.txt'"
    as_pg valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" pgbouncer "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
    wait_port "$port"
    measure pgbouncer "$port" "$mode" as_pg
    pkill -INT -f "valgrind.*$WORK/pgbouncer.ini" || true
    sleep 1
  fi
done
