#!/usr/bin/env bash
# Scale-out check without Docker: Debian's nginx on loopback in front of several `python -m service`
# processes, with deploy/nginx.conf's proxy settings; one replica is SIGKILLed mid-load, and the load
# script prints how many requests succeeded and failed.
#   scripts/scale-nginx-test.sh [REPLICAS] [REQUESTS]        (defaults: 3 replicas, 3000 requests)
# NO_RETRY=1 turns nginx's retry on another replica off, to see what it saves.
# Needs nginx (`apt-get install -y nginx`). Ports: 18100 (nginx), 18101.. (replicas); loopback only.
# Stops everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPLICAS=${1:-3}
REQUESTS=${2:-3000}
PYTHON=${PYTHON:-.venv/bin/python}
LB_PORT=${LB_PORT:-18100}
command -v nginx >/dev/null || { echo "nginx not found: apt-get install -y nginx" >&2; exit 1; }
work=$(mktemp -d /tmp/scale-nginx.XXXX)
pids=()
cleanup() {
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

servers=""
for i in $(seq 1 "$REPLICAS"); do
    port=$((LB_PORT + i))
    SENTIMENT_HOST=127.0.0.1 SENTIMENT_PORT=$port SENTIMENT_TORCH_THREADS=1 SENTIMENT_DEVICE=cpu \
        SENTIMENT_LOG_LEVEL=warning SENTIMENT_ACCESS_LOG=false \
        "$PYTHON" -m service >"$work/replica$i.log" 2>&1 &
    pids+=($!)
    servers+="        server 127.0.0.1:$port max_fails=1 fail_timeout=5s;\n"
done
for i in $(seq 1 "$REPLICAS"); do
    port=$((LB_PORT + i))
    for _ in $(seq 120); do
        "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" \
            2>/dev/null && break
        sleep 0.5
    done
    "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" ||
        { echo "replica $i did not become ready:"; cat "$work/replica$i.log"; exit 1; }
done
echo "$REPLICAS replicas ready on ports $((LB_PORT + 1))-$((LB_PORT + REPLICAS))"

# deploy/nginx.conf with loopback replicas instead of the compose service, files under $work, and the
# serving replica's address echoed in a header (for the report only).
awk -v servers="$servers" '
    /# BEGIN servers/ { printf "%s", servers; skip = 1; next }
    /# END servers/ { skip = 0; next }
    skip { next }
    /^pid / { print "pid '"$work"'/nginx.pid;"; next }
    /listen 8000;/ { print "        listen 127.0.0.1:'"$LB_PORT"';"; next }
    /proxy_pass / { print; print "            add_header X-Upstream $upstream_addr always;"; next }
    /proxy_next_upstream / && "'"${NO_RETRY:-0}"'" == "1" { print "            proxy_next_upstream off;"; next }
    { print }
' deploy/nginx.conf >"$work/nginx.conf"
nginx -t -q -p "$work" -c "$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf"
sleep 0.5
echo "nginx on 127.0.0.1:$LB_PORT; killing replica 2 (pid ${pids[1]}) after $((REQUESTS / 3)) responses"
"$PYTHON" scripts/scale-load.py --url "http://127.0.0.1:$LB_PORT" --requests "$REQUESTS" \
    --kill-pid "${pids[1]}" --kill-after $((REQUESTS / 3))
