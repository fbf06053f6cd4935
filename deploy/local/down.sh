#!/usr/bin/env bash
# Stops what deploy/local/up.sh started and removes its state directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=common.sh
. "$ROOT/deploy/local/common.sh"
STATE=${STATE_DIR:-$ROOT/.local}
if [ -f "$STATE/router.pid" ]; then
  pid=$(cat "$STATE/router.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
fi
for d in "$STATE"/shard*; do
  [ -d "$d" ] && stop_shard "$d"
done
rm -rf "$STATE"
echo "stopped"
