#!/usr/bin/env bash
# End-to-end check of the image with Docker Compose on this host, CPU only (docker-compose.cpu.yml):
# start the stack, wait until healthy, ask /readyz and POST /predict through the published loopback port,
# retrain a small model into the shared volume with the `train` service, reload the running service with
# SIGHUP, and check that it now serves the new version. Build the image first (scripts/docker-build.sh).
#   scripts/docker-verify.sh            (KEEP=1 leaves the stack running; PORT=18000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18000}
export SENTIMENT_PUBLISH_PORT=$PORT
compose=(docker compose -p lstm-sentiment-verify -f docker-compose.yml -f docker-compose.cpu.yml)
url="http://127.0.0.1:$PORT"
load_log=$(mktemp)
cleanup() {
    rm -f "$load_log"
    [ "${KEEP:-0}" = 1 ] || "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
}
trap cleanup EXIT
py() { python3 -c "$@"; }
get() { py "import sys, urllib.request as u; print(u.urlopen('$url$1', timeout=5).read().decode())"; }
predict() {
    py "import json, urllib.request as u
r = u.Request('$url/predict', json.dumps({'texts': ['I absolutely love this, it\'s wonderful', 'This is the worst, I hate it']}).encode(), {'content-type': 'application/json'})
print(u.urlopen(r, timeout=10).read().decode())"
}
wait_healthy() {
    local id; id=$("${compose[@]}" ps -q service)
    for _ in $(seq 90); do
        [ "$(docker inspect -f '{{.State.Health.Status}}' "$id")" = healthy ] && return 0
        sleep 2
    done
    docker logs "$id" | tail -20; return 1
}

start=$(date +%s)
"${compose[@]}" up -d --no-build
wait_healthy
echo "== healthy after $(( $(date +%s) - start )) s (docker healthcheck on /readyz)"
echo "== GET /readyz";  get /readyz
echo "== POST /predict"; predict
before=$(py "import json, urllib.request as u; print(json.load(u.urlopen('$url/v1/model', timeout=5))['version'])")
echo "== serving version $before"

echo "== retrain into the volume: docker compose run --rm train ${TRAIN_ARGS:---tiny --no-progress}"
start=$(date +%s)
# shellcheck disable=SC2086
"${compose[@]}" run --rm train ${TRAIN_ARGS:---tiny --no-progress} | tail -12
echo "== retrained in $(( $(date +%s) - start )) s"

echo "== reload under load: docker compose kill -s SIGHUP service while 4000 requests run"
python3 scripts/scale-load.py --url "$url" --requests 4000 --concurrency 4 >"$load_log" 2>&1 &
load=$!
sleep 1
"${compose[@]}" kill -s SIGHUP service >/dev/null
wait "$load" || true
cat "$load_log"
for _ in $(seq 30); do
    after=$(py "import json, urllib.request as u; print(json.load(u.urlopen('$url/v1/model', timeout=5))['version'])")
    [ "$after" != "$before" ] && break
    sleep 1
done
echo "== serving version $after (was $before)"
echo "== POST /predict"; predict
[ "$after" != "$before" ] || { echo "reload did not change the served version" >&2; exit 1; }
grep -q "failed 0" "$load_log" || { echo "requests failed during the reload" >&2; exit 1; }
echo "== all checks passed"
