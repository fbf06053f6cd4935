#!/usr/bin/env bash
# Installs the driver toolchains that tests/tests/clients.rs runs against pg-router:
#   - Debian: the PostgreSQL JDBC driver (/usr/share/java/postgresql.jar), sysbench with its
#     pgsql driver, and a JDK, Node.js/npm or Python's venv module when they are missing;
#   - a Python venv at target/clients/venv with the pinned psycopg and asyncpg
#     (tests/clients/python/requirements.txt);
#   - node-postgres from tests/clients/node/package-lock.json (npm ci).
# Idempotent: each step is skipped when what it would install is already there. apt-get needs
# root (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v sysbench >/dev/null || missing+=(sysbench)
command -v javac >/dev/null || missing+=(default-jdk-headless)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ! command -v python3 >/dev/null; then
  missing+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "clients/setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

venv=target/clients/venv
req=tests/clients/python/requirements.txt
if ! cmp -s "$req" "$venv/requirements.installed" 2>/dev/null; then
  echo "clients/setup.sh: Python venv $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/requirements.installed"
fi

node=tests/clients/node
if ! cmp -s "$node/package-lock.json" "$node/node_modules/.package-lock.installed" 2>/dev/null; then
  echo "clients/setup.sh: npm ci in $node"
  (cd "$node" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$node/package-lock.json" "$node/node_modules/.package-lock.installed"
fi
