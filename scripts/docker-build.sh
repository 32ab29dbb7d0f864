#!/usr/bin/env bash
# Build the service image and report how long it took and how big it is.
#   scripts/docker-build.sh [TAG]            (default TAG: lstm-sentiment:latest)
# Extra `docker build` options via DOCKER_BUILD_ARGS, e.g. DOCKER_BUILD_ARGS="--build-arg TORCH_SPEC=torch==2.13.0".
# --network host lets the build reach the package index on hosts whose bridge network has no NAT
# (harmless elsewhere). On a machine that cannot pull images, run shared/tools/docker-standin-base.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-lstm-sentiment:latest}
start=$(date +%s)
# shellcheck disable=SC2086
docker build --network host ${DOCKER_BUILD_ARGS:-} -t "$TAG" .
seconds=$(( $(date +%s) - start ))
bytes=$(docker image inspect --format '{{.Size}}' "$TAG")
echo "built $TAG in ${seconds} s; image size $(( bytes / 1000000 )) MB (${bytes} bytes)"
