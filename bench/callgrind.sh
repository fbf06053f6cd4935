#!/usr/bin/env bash
# User-space instructions per transaction of pg-router (and PgBouncer, for reference) under
# callgrind: a deterministic measure of per-message cost, unlike wall-clock time on a shared
# machine. Kernel time (the socket calls) is not counted; it is about the same for both.
#
#   CG_MODES="simple extended prepared"   pgbench -M modes
#   CG_WORKLOAD=select-only               or tpcb-like
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
FLAG=-S; [ "${CG_WORKLOAD:-select-only}" = tpcb-like ] && FLAG=
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
PGPASSWORD=bench-pw pgbench -q -i -s 1 -h 127.0.0.1 -p "$PG_PORT" -U bench bench >/dev/null 2>&1

# measure NAME PORT CONTROL... : warm up, zero the counters, run, dump; prints instructions/tx.
# CONTROL is the command prefix that reaches the callgrind process (as_pg for PgBouncer).
measure() {
  local name=$1 port=$2 mode=$3; shift 3
  pgbench -n -c "$CLIENTS" -j 1 -t 200 -M "$mode" $FLAG -h 127.0.0.1 -p "$port" -U bench bench >/dev/null
  "$@" callgrind_control -z >/dev/null 2>&1
  pgbench -n -c "$CLIENTS" -j 1 -t "$TX" -M "$mode" $FLAG -h 127.0.0.1 -p "$port" -U bench bench >/dev/null
  "$@" callgrind_control -d >/dev/null 2>&1
  local out ir
  out=$(ls -t "$WORK"/cg.*.1 | head -1)
  ir=$(awk '/^summary:/ {print $2; exit}' "$out")
  printf '%-10s %-9s %-12s %8d instructions/tx\n' "$name" "$mode" "${CG_WORKLOAD:-select-only}" $((ir / (TX * CLIENTS)))
  if [ -n "${CG_KEEP:-}" ]; then
    mkdir -p "$CG_KEEP" && cp "$out" "$CG_KEEP/$name-$mode-${CG_WORKLOAD:-select-only}.cg"
  fi
  rm -f "$WORK"/cg.*
}

for mode in $MODES; do
  port=$(free_port)
  { bench_router_config "$port" 8 1 trust; bench_shard s0 "$PG_PORT"; } >"$WORK/router.toml"
  PG_ROUTER_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "$PG_ROUTER_BIN" serve --config "$WORK/router.toml" >"$WORK/router.log" 2>&1 &
  vp=$!
  wait_port "$port"
  measure pg-router "$port" "$mode" env
  kill -INT "$vp"; wait "$vp" 2>/dev/null || true

  if [ "${CG_BOUNCER:-0}" = 1 ] && [ "$mode" != prepared ] && command -v pgbouncer >/dev/null; then
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
