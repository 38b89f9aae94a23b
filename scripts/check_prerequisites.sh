#!/usr/bin/env bash
# What `make up` / `make preview` / `make down` need, checked before anything is installed into .venv:
# a reachable Docker engine, and a Pulumi CLI (installed into .tools/ when missing: scripts/install_pulumi.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null 2>&1; then
    echo "error: the docker CLI is not installed: install Docker (https://docs.docker.com/engine/install/) and start it" >&2
    exit 1
fi
if ! detail="$(timeout 20 docker info --format '{{.ServerVersion}}' 2>&1)"; then
    detail="${detail:-no answer within 20 s}"
    echo "error: no Docker engine is reachable (docker info: ${detail##*$'\n'}): start Docker (docker info must work)" >&2
    exit 1
fi
bash scripts/install_pulumi.sh
