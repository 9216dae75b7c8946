#!/usr/bin/env bash
# Rating under load: dermatologists (locust users) rating against gunicorn on PostgreSQL.
# `make load` (30 users, 3 minutes) and `make load-smoke` (10 users, 30 s); not part of CI.
#
# Uses a private, throw-away database (dropped and created here; its name must contain
# "load") and a private var folder, seeds a study with `seed_load_study`, serves the app with
# gunicorn under production settings (DEBUG off, whitenoise), runs bench/load_rating.py with
# locust, stops gunicorn and checks with bench/load_check.py that every acknowledged rating
# is stored exactly once. Figures go to docs/benchmarks.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

USERS="${LOAD_USERS:-30}"
SPAWN_RATE="${LOAD_SPAWN_RATE:-5}"
DURATION="${LOAD_DURATION:-3m}"
RATERS="${LOAD_RATERS:-$USERS}"
ITEMS="${LOAD_ITEMS:-400}"
PORT="${LOAD_PORT:-8731}"
# Sync workers, one thread each: a request is a few milliseconds of Python plus waits on
# PostgreSQL, so two workers per core keep both cores busy while one waits. More would only
# compete for the same two cores with PostgreSQL and locust itself.
WORKERS="${LOAD_WORKERS:-4}"
export DATABASE_URL="${LOAD_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/fairskin_load}"
DB_NAME="${DATABASE_URL##*/}"
ADMIN_URL="${DATABASE_URL%/*}/postgres"
OUT="${LOAD_OUT:-var/load/$(date +%Y%m%d-%H%M%S)}"

case "$DB_NAME" in
    *load*) ;;
    *) echo "load.sh: refusing to drop database '$DB_NAME' (its name must contain 'load')" >&2
       exit 2 ;;
esac

# Production settings, as far as plain HTTP on 127.0.0.1 allows.
export DEBUG=0 SECRET_KEY="load-test-only-secret-key-0123456789-abcdefghijklmnop"
export SECURE_SSL_REDIRECT=0 SESSION_COOKIE_SECURE=0 CSRF_COOKIE_SECURE=0 SECURE_HSTS_SECONDS=0
export ALLOWED_HOSTS=127.0.0.1 LOG_LEVEL=WARNING
export FAIRSKIN_VAR_DIR="$PWD/var/load/site" MEDIA_ROOT="$PWD/var/load/site/media"
mkdir -p "$OUT"
rm -rf "$MEDIA_ROOT"

echo "== database $DB_NAME (fresh)"
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$DB_NAME\"" -c "CREATE DATABASE \"$DB_NAME\""
$PY manage.py migrate --noinput -v 0
$PY manage.py collectstatic --noinput -v 0
echo "== seeding a study: $RATERS raters, $ITEMS synthetic images"
$PY manage.py seed_load_study --raters "$RATERS" --items "$ITEMS" | tee "$OUT/seed.txt"
STUDY_ID="$(sed -n 's/^LOAD_STUDY_ID=//p' "$OUT/seed.txt")"

GUNICORN_ARGS=(--bind "127.0.0.1:$PORT" --workers "$WORKERS" --threads 1 --timeout 30
               --no-control-socket)
echo "== gunicorn fairskin_site.wsgi:application ${GUNICORN_ARGS[*]}"
.venv/bin/gunicorn fairskin_site.wsgi:application "${GUNICORN_ARGS[@]}" \
    --error-logfile "$OUT/gunicorn.log" &
GUNICORN_PID=$!
stop_gunicorn() {
    [ -n "${SAMPLER_PID:-}" ] && kill "$SAMPLER_PID" 2>/dev/null
    kill -TERM "$GUNICORN_PID" 2>/dev/null || return 0
    wait "$GUNICORN_PID" 2>/dev/null || true
}
trap stop_gunicorn EXIT INT TERM
for _ in $(seq 60); do
    curl -fs "http://127.0.0.1:$PORT/accounts/login/" >/dev/null && break
    kill -0 "$GUNICORN_PID" || { echo "gunicorn did not start; see $OUT/gunicorn.log" >&2; exit 1; }
    sleep 0.5
done

# Other work on the machine skews the figures: every 10 s, note processes using 20 % of a
# core or more (top's second sample is the current rate, not the lifetime average).
(while sleep 9; do
     top -b -n 2 -d 1 -w 200 -c | awk -v t="$(date +%T)" '/^top -/ { n++ }
         n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 20 { print t, $9, $12, $13, $14 }'
 done > "$OUT/machine.txt") &
SAMPLER_PID=$!
echo "== locust: $USERS users, $SPAWN_RATE/s, $DURATION"
LOAD_STUDY_ID="$STUDY_ID" LOAD_RATERS="$RATERS" LOAD_ACKS="$OUT/acks.jsonl" \
    .venv/bin/locust --headless -u "$USERS" -r "$SPAWN_RATE" -t "$DURATION" \
    --host "http://127.0.0.1:$PORT" -f bench/load_rating.py --csv "$OUT/locust" \
    --only-summary --stop-timeout 5 --exit-code-on-error 0 2>&1 | tee "$OUT/locust.txt"
stop_gunicorn
kill "$SAMPLER_PID" 2>/dev/null || true
trap - EXIT INT TERM

echo "== check"
status=0
$PY bench/load_check.py --study "$STUDY_ID" --acks "$OUT/acks.jsonl" --csv "$OUT/locust" \
    | tee "$OUT/check.txt" || status=$?
if [ "${LOAD_KEEP_DB:-0}" != 1 ]; then
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$DB_NAME\""
fi
OTHERS="$(grep -v -e gunicorn -e locust -e postgres -e ' top ' "$OUT/machine.txt" || true)"
if [ -n "$OTHERS" ]; then
    echo "WARNING: other processes were busy during the run; the timings are skewed:"
    echo "$OTHERS" | awk '{ print $3, $4, $5 }' | sort | uniq -c
fi
echo "Results in $OUT"
exit "$status"
