"""Container health check: exit 0 when GET /readyz answers 200 (model loaded), 1 otherwise.

Python's standard library only, so the image needs no curl. Used by the Dockerfile's HEALTHCHECK and
docker-compose.yml; SENTIMENT_PORT picks the port, HEALTHCHECK_URL overrides the whole URL.
"""

import os
import sys
import urllib.request

url = os.environ.get("HEALTHCHECK_URL", f"http://127.0.0.1:{os.environ.get('SENTIMENT_PORT', '8000')}/readyz")
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # 503 before the model is loaded, refused before the server listens
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
