#!/usr/bin/env bash
# Create .venv from the lock file and install the package in editable mode. Idempotent: does
# nothing when the lock file has not changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
stamp="$VENV/.lock-sha256"
want="$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# torch is pinned in the lock file to the CPU wheel that pip finds through PIP_FIND_LINKS.
"$VENV/bin/pip" install -q -r requirements.lock
"$VENV/bin/pip" install -q --no-deps -e .
echo "$want" > "$stamp"
