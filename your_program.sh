#!/usr/bin/env bash
# Runs the broker in the foreground on localhost:9092 (data in /tmp/kafka-logs), after
# creating or updating .venv.  Drop-in for `kafka-server-start.sh server.properties`:
#   ./your_program.sh                          # defaults
#   ./your_program.sh path/to/server.properties
#   ./your_program.sh --reload [...]           # restart when a source file changes
#   ./your_program.sh server.properties --listen tcp:19092 -o num.partitions=3
set -euo pipefail
source "$(dirname "$0")/scripts/venv.sh" test,dev
args=()
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
    args+=(--config "$1")
    shift
fi
exec "$VENV/bin/python" -m akfak "${args[@]}" "$@"
