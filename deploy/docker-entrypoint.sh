#!/bin/sh
# Seed an empty checkpoint volume: when SENTIMENT_CHECKPOINT names a directory that does not exist yet
# (a fresh volume or bind mount), copy the image's default model there first, so the service starts and a
# later retrain can replace it in place. Then run the command (the service, or `python -m training ...`).
set -eu
target="${SENTIMENT_CHECKPOINT:-}"
builtin="${SENTIMENT_BUILTIN_CHECKPOINT:-/app/checkpoints/default}"
if [ -n "$target" ] && [ ! -e "$target" ] && [ -w "$(dirname "$target")" ]; then
    echo "seeding $target with the built-in default model" >&2
    cp -r "$builtin" "$target.seeding" && mv "$target.seeding" "$target"
fi
exec "$@"
