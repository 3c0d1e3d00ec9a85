#!/usr/bin/env bash
# Runs the whole test suite (and ruff) in .venv, creating or updating it first.
# Extra arguments go to pytest, e.g. ./run_tests.sh tests/test_framing.py -x
set -euo pipefail
source "$(dirname "$0")/scripts/venv.sh" test,dev
cd "$AKFAK_ROOT"
"$VENV/bin/ruff" check .
# The whole suite runs on two pytest-xdist workers: most of its time is spent waiting on
# brokers, JVMs and clients in subprocesses (AKFAK_TEST_WORKERS=0 runs it in one process).
# A test file stays on one worker, so its module-scoped brokers and JVMs start once.
if [ $# -eq 0 ] && [ "${AKFAK_TEST_WORKERS:-2}" != 0 ]; then
    set -- -n "${AKFAK_TEST_WORKERS:-2}" --dist loadfile
fi
exec "$VENV/bin/python" -m pytest "$@"
