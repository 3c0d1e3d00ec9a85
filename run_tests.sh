#!/usr/bin/env bash
# Runs the whole test suite (and ruff) in .venv, creating or updating it first.
# Extra arguments go to pytest, e.g. ./run_tests.sh tests/test_framing.py -x
set -euo pipefail
source "$(dirname "$0")/scripts/venv.sh" test,dev
cd "$AKFAK_ROOT"
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest "$@"
