#!/usr/bin/env bash
# Everything `make serve` and `make test` need, idempotent and quick when done already:
# a virtualenv with the project and its dev tools, a running Docker engine with runsc
# registered, and the runtime image.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi

# Tools the operations tests use: Prometheus (dashboard queries) and docker-compose
# (validating deploy/compose).
if [ "$(id -u)" = 0 ] && { ! command -v prometheus >/dev/null || ! command -v docker-compose >/dev/null; }; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends prometheus docker-compose >/dev/null
fi

scripts/ensure-engine.sh
"$VENV/bin/sandbox" image build >/dev/null
