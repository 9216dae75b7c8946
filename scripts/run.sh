#!/usr/bin/env bash
# Start FairSkin on this machine: migrate, demo accounts, a Celery worker on both queues
# (with the lease sweep), and the web server. SQLite and a filesystem broker unless
# DATABASE_URL / CELERY_BROKER_URL say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBUG="${DEBUG:-1}"
PY=.venv/bin/python
VAR_DIR="${FAIRSKIN_VAR_DIR:-var}"
mkdir -p "$VAR_DIR"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"

echo "Database: ${DATABASE_URL:-SQLite in $VAR_DIR}   Broker: ${CELERY_BROKER_URL:-filesystem queue in $VAR_DIR/broker}"
$PY manage.py migrate --noinput
$PY manage.py seed_accounts
$PY manage.py seed_demo --if-missing

.venv/bin/celery -A fairskin_site worker --beat --queues gpu,cpu --concurrency 1 \
    --loglevel INFO --schedule "$VAR_DIR/celerybeat-schedule" --hostname "fairskin-local@%h" &
WORKER_PID=$!
stop_worker() {
    # Warm shutdown first; a training step may be mid-way, so after 10 s stop it cold. Jobs
    # hold leases and checkpoints, so the next start resumes whatever was cut short.
    kill -TERM "$WORKER_PID" 2>/dev/null || return 0
    for _ in $(seq 20); do kill -0 "$WORKER_PID" 2>/dev/null || return 0; sleep 0.5; done
    pkill -KILL -P "$WORKER_PID" 2>/dev/null || true
    kill -KILL "$WORKER_PID" 2>/dev/null || true
}
trap stop_worker EXIT INT TERM

echo "FairSkin is starting on http://$HOST:$PORT/  (Ctrl-C stops the web server and the worker)"
$PY manage.py runserver --noreload "$HOST:$PORT"
