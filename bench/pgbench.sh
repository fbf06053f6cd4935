#!/usr/bin/env bash
# pgbench through three paths on this machine, in one run: direct PostgreSQL, PgBouncer
# (transaction pooling) and pg-router (transaction pooling). Prints TPS, mean latency, the ratio
# to direct, and the pooler's CPU time per transaction.
#
#   BENCH_SECONDS=20   duration of each row
#   BENCH_CLIENTS=16   pgbench clients (-c); -j 2
#   BENCH_SCALE=16     pgbench scale factor
#   BENCH_WORKLOADS    default "select-only tpcb-like"
#   BENCH_MODES        default "simple extended prepared"
#   BENCH_REPEAT=4     runs per path and row, taken in turns in mirrored order (direct,
#                      PgBouncer, pg-router, then pg-router, PgBouncer, direct, and again) and
#                      averaged, so a steady drift of the machine's speed falls on every path
#                      alike. PostgreSQL's own CPU per transaction moves by several percent from
#                      one 20 s run to the next (tpcb-like most), more than the poolers differ
#                      by; four runs per path halve that noise in the mean against one.
#   ROUTER_WORKERS     pg-router server.worker_threads (default 1)
#   BENCH_BACKEND=tcp  how both poolers reach PostgreSQL: tcp (127.0.0.1) or unix (its
#                      Unix-domain socket, as a pooler on the database host would); clients
#                      reach every path over TCP either way
#   PG_ROUTER_BIN      pg-router binary (default: cargo build --release)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=common.sh
. "$ROOT/bench/common.sh"
SECONDS_PER_ROW=${BENCH_SECONDS:-20}
CLIENTS=${BENCH_CLIENTS:-16}
SCALE=${BENCH_SCALE:-16}
POOL=20
WORKLOADS=${BENCH_WORKLOADS:-select-only tpcb-like}
MODES=${BENCH_MODES:-simple extended prepared}
REPEAT=${BENCH_REPEAT:-4}
ROUTER_WORKERS=${ROUTER_WORKERS:-1}
BACKEND=${BENCH_BACKEND:-tcp}
case "$BACKEND" in tcp | unix) ;; *) echo "BENCH_BACKEND must be tcp or unix" >&2; exit 1 ;; esac

bench_prepare
command -v pgbouncer >/dev/null || { echo "pgbouncer is missing (apt-get install pgbouncer)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pg-router-bench.XXXXXX)
make_dir "$WORK"
PG_PORT=$(free_port); BOUNCER_PORT=$(free_port); ROUTER_PORT=$(free_port)
cleanup() {
  [ -n "${ROUTER_PID:-}" ] && kill "$ROUTER_PID" 2>/dev/null || true
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  # runuser does not pass the signal on: stop pgbouncer itself.
  pkill -f "pgbouncer $WORK/pgbouncer.ini" 2>/dev/null || true
  stop_shard "$WORK/pg"
  rm -rf "$WORK"
}
trap cleanup EXIT

bench_server "$WORK/pg" "$PG_PORT"
PGPASSWORD=bench-pw pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U bench bench >/dev/null 2>&1

# Where the poolers find PostgreSQL: its address, or the directory of its socket.
PG_HOST=127.0.0.1
[ "$BACKEND" = unix ] && PG_HOST=$WORK/pg
as_pg sh -c "cat > '$WORK/pgbouncer.ini'" <<CONF
[databases]
bench = host=$PG_HOST port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 200
unix_socket_dir =
logfile = $WORK/pgbouncer.log
CONF
as_pg sh -c "echo '\"bench\" \"bench-pw\"' > '$WORK/userlist.txt'"
as_pg pgbouncer "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!

{ bench_router_config "$ROUTER_PORT" "$POOL" "$ROUTER_WORKERS"; bench_shard s0 "$PG_PORT" "" "$PG_HOST"; } >"$WORK/router.toml"
PG_ROUTER_LOG=warn "$PG_ROUTER_BIN" serve --config "$WORK/router.toml" >"$WORK/router.log" 2>&1 &
ROUTER_PID=$!
wait_port "$BOUNCER_PORT"
wait_port "$ROUTER_PORT"
# pgbouncer runs under runuser: measure the pgbouncer process itself.
BOUNCER_PROC=$(pgrep -f "pgbouncer $WORK/pgbouncer.ini" | tail -1 || true)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# "steal total": the machine's CPU time the hypervisor gave to others, and all of it (ticks).
steal_ticks() { awk '/^cpu /{t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t}' /proc/stat; }
TICKS=$(getconf CLK_TCK)

# run PORT MODE SCRIPT_FLAG PROC -> "tps latency_ms cpu_us_per_tx steal_percent"
run() {
  local port=$1 mode=$2 flag=$3 proc=$4 out before after tps lat txs cpu s0 t0 s1 t1 steal
  # Every run starts just after a checkpoint: none falls inside a 20 s run (checkpoint_timeout
  # is minutes), so no path's row pays for another's writes.
  as_pg psql -X -q -h "$WORK/pg" -p "$PG_PORT" -U bench -d bench -c CHECKPOINT >/dev/null
  before=$( [ -n "$proc" ] && cpu_ticks "$proc" || echo 0 )
  read -r s0 t0 <<<"$(steal_ticks)"
  out=$(PGPASSWORD=bench-pw pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_PER_ROW" -M "$mode" $flag \
        -h 127.0.0.1 -p "$port" -U bench bench 2>&1) || { echo "failed - - 0"; return; }
  after=$( [ -n "$proc" ] && cpu_ticks "$proc" || echo 0 )
  read -r s1 t1 <<<"$(steal_ticks)"
  steal=$(awk -v s=$((s1 - s0)) -v t=$((t1 - t0)) 'BEGIN{printf "%.1f", (t > 0 ? 100 * s / t : 0)}')
  if ! grep -q "number of failed transactions: 0 " <<<"$out"; then echo "failed - - $steal"; return; fi
  tps=$(awk '/^tps = /{print $3}' <<<"$out")
  lat=$(awk '/^latency average = /{print $4}' <<<"$out")
  txs=$(awk '/^number of transactions actually processed:/{print $6}' <<<"$out")
  if [ -n "$proc" ] && [ "${txs:-0}" -gt 0 ]; then
    cpu=$(awk -v d=$((after - before)) -v t="$TICKS" -v n="$txs" 'BEGIN{printf "%.1f", d / t * 1e6 / n}')
  else
    cpu=-
  fi
  printf '%.0f %s %s %s\n' "$tps" "$lat" "$cpu" "$steal"
}

# mean "tps latency cpu steal" ... -> their mean ("failed - -" if any run failed; "-" stays "-")
mean() {
  printf '%s\n' "$@" | awk '$1 == "failed" {bad = 1} {t += $1; l += $2; c += $3; n++; if ($3 == "-") nocpu = 1}
    END { if (bad || n == 0) print "failed - -";
          else printf "%.0f %.3f %s\n", t / n, l / n, nocpu ? "-" : sprintf("%.1f", c / n) }'
}

# steal_range "tps latency cpu steal" ... -> "min-max" of the runs' steal percentages
steal_range() {
  printf '%s\n' "$@" | awk 'NR == 1 || $4 < lo {lo = $4} NR == 1 || $4 > hi {hi = $4}
    END { printf "%.1f-%.1f\n", lo, hi }'
}

echo "pgbench: $CLIENTS clients, -j 2, ${SECONDS_PER_ROW}s per run, each row the mean of $REPEAT runs taken in mirrored turns after a CHECKPOINT, scale $SCALE, pool size $POOL," \
  "pg-router worker_threads = $ROUTER_WORKERS, poolers to PostgreSQL over $BACKEND; $(nproc) cores"
echo
printf '| %-10s | %-8s | %9s | %22s | %22s | %13s | %13s | %7s |\n' workload mode "direct tps" "pgbouncer tps (ratio)" \
  "pg-router tps (ratio)" "bouncer µs/tx" "router µs/tx" "steal %"
printf '|%s|\n' "------------|----------|-----------|------------------------|------------------------|---------------|---------------|---------"
for workload in $WORKLOADS; do
  flag=""; [ "$workload" = select-only ] && flag="-S"
  for mode in $MODES; do
    ds=(); bs=(); rs=()
    for i in $(seq "$REPEAT"); do
      if [ $((i % 2)) = 1 ]; then
        ds+=("$(run "$PG_PORT" "$mode" "$flag" "")")
        bs+=("$(run "$BOUNCER_PORT" "$mode" "$flag" "$BOUNCER_PROC")")
        rs+=("$(run "$ROUTER_PORT" "$mode" "$flag" "$ROUTER_PID")")
      else
        rs+=("$(run "$ROUTER_PORT" "$mode" "$flag" "$ROUTER_PID")")
        bs+=("$(run "$BOUNCER_PORT" "$mode" "$flag" "$BOUNCER_PROC")")
        ds+=("$(run "$PG_PORT" "$mode" "$flag" "")")
      fi
    done
    read -r d_tps d_lat _ <<<"$(mean "${ds[@]}")"
    read -r b_tps b_lat b_cpu <<<"$(mean "${bs[@]}")"
    read -r r_tps r_lat r_cpu <<<"$(mean "${rs[@]}")"
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }'; }
    printf '| %-10s | %-8s | %9s | %22s | %22s | %13s | %13s | %7s |\n' "$workload" "$mode" "$d_tps" \
      "$b_tps ($(ratio "$b_tps" "$d_tps"))" "$r_tps ($(ratio "$r_tps" "$d_tps"))" "$b_cpu" "$r_cpu" \
      "$(steal_range "${ds[@]}" "${bs[@]}" "${rs[@]}")"
  done
done
echo
echo "latency: mean ms per transaction as reported by pgbench; 'failed' = pgbench reported errors"
echo "steal %: the lowest and highest share of the machine's CPU time its hypervisor took during one of the row's runs"
echo "(/proc/stat); where it moves by more than a few points, the row compares runs on machines of different speeds."
echo "(PgBouncer before 1.21 has no prepared statements in transaction mode, so its -M prepared rows fail)."
