#!/usr/bin/env bash
# End-to-end test of the demo page (/) in headless Chromium: type, submit, read, screenshot.
#
# Not part of `pytest` (CI would need Debian packages). Needs, once:
#   apt-get update && apt-get install -y chromium     # Debian's Chromium at /usr/bin/chromium
#   Node.js >= 18 with npm                             # playwright-core is installed on first run
# Then: scripts/browser-test.sh [SCREENSHOT]   (default runs/browser-test/demo.png)
# It starts the service on the shipped default model, bound to 127.0.0.1 on a free port, and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
PLAYWRIGHT_VERSION=1.65.1
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/lstm-sentiment-browser-test
SCREENSHOT=${1:-runs/browser-test/demo.png}

[ -x "$CHROMIUM" ] || { echo "no Chromium at $CHROMIUM: apt-get install -y chromium" >&2; exit 2; }
command -v node >/dev/null || { echo "Node.js is needed (apt-get install -y nodejs npm)" >&2; exit 2; }
if [ ! -f "$CACHE/node_modules/playwright-core/package.json" ]; then
  # Only the driver library: the browser is Debian's, so no `playwright install` download.
  npm install --silent --no-audit --no-fund --prefix "$CACHE" "playwright-core@$PLAYWRIGHT_VERSION"
fi

PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$(mktemp)
SENTIMENT_HOST=127.0.0.1 SENTIMENT_PORT=$PORT "$PYTHON" -m service >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -f "$LOG"' EXIT

URL=http://127.0.0.1:$PORT/
for _ in $(seq 120); do
  "$PYTHON" -c "import urllib.request as u; u.urlopen('${URL}readyz', timeout=1)" 2>/dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOG" >&2; echo "the service did not start" >&2; exit 1; }
  sleep 0.5
done

mkdir -p "$(dirname "$SCREENSHOT")"
NODE_PATH="$CACHE/node_modules" node scripts/browser-test.cjs "$URL" "$SCREENSHOT"
echo "browser test passed; screenshot: $SCREENSHOT"
