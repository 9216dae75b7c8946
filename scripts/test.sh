#!/usr/bin/env bash
# The whole suite: lint, architecture contracts, tests. On PostgreSQL and Redis when they
# are reachable (always in CI, where their absence is an error); otherwise says so and falls
# back to SQLite and the filesystem broker.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PG_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/fairskin}"
REDIS_URL="${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/14}"

reachable() {
    "$PY" - "$1" <<'PYEOF'
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
try:
    socket.create_connection((u.hostname, u.port), timeout=2).close()
except OSError:
    sys.exit(1)
PYEOF
}

if reachable "$PG_URL" && reachable "$REDIS_URL"; then
    export DATABASE_URL="$PG_URL" CELERY_BROKER_URL="$REDIS_URL"
    echo "make test: PostgreSQL ($PG_URL) and Redis ($REDIS_URL)"
else
    if [ "${CI:-}" = "true" ]; then
        echo "make test: PostgreSQL or Redis is not reachable, and CI must test on them." >&2
        exit 1
    fi
    echo "make test: WARNING: PostgreSQL or Redis not reachable; FALLING BACK to SQLite and" \
         "the filesystem broker. Tests that need PostgreSQL or Redis are skipped." >&2
    unset DATABASE_URL CELERY_BROKER_URL
    export FAIRSKIN_VAR_DIR="${FAIRSKIN_VAR_DIR:-$(mktemp -d)}"
fi

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== import-linter"; .venv/bin/lint-imports
# Strict on the engine, django-stubs on the apps checked so far (`files` in [tool.mypy]).
echo "== mypy"; .venv/bin/mypy
# CI lists the 30 slowest tests, so a test that grows slow is seen in every run.
DURATIONS=()
if [ "${CI:-}" = "true" ]; then DURATIONS=(--durations=30); fi
echo "== pytest"; exec "$PY" -m pytest "${DURATIONS[@]}" "$@"
