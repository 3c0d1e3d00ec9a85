# Sourced by ./your_program.sh and ./run_tests.sh: create or reuse .venv with akfak installed.
# Reinstalls only when pyproject.toml changes (a stamp file remembers its hash).
set -eu
AKFAK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${AKFAK_VENV:-$AKFAK_ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${1:-test,dev}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.akfak-installed"
WANT="$(sha256sum "$AKFAK_ROOT/pyproject.toml" | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # compat mode puts the checkout on sys.path, so twistd finds twisted/plugins/akfak_plugin.py
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --config-settings editable_mode=compat -e "$AKFAK_ROOT[$EXTRAS]"
    echo "$WANT" > "$STAMP"
fi
