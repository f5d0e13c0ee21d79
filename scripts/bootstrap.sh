#!/usr/bin/env bash
# Create .venv from the lock file and install the package in editable mode. Idempotent: does
# nothing when the lock file and the interpreter have not changed since the last run. Delete
# .venv (or set PYTHON) to choose the interpreter again.
#
# The interpreter: $PYTHON when set. Otherwise the faster of `python3` on PATH and the
# distribution's /usr/bin/python3 (each must be Python 3.11 or newer with its venv module), timed
# on a fixed piece of pure Python (scripts/python_speed.py); the distribution's is taken only when
# it is at least 10% faster. Distributions build CPython with profile-guided and link-time
# optimization; an interpreter built from source without them (pyenv's default) ran the audit
# benchmark with about 15% more CPU time here (docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

choose_python() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
        return
    fi
    local default fallback seconds fallback_seconds
    default="$(command -v python3 || true)"
    fallback=/usr/bin/python3
    seconds="$([ -n "$default" ] && "$default" scripts/python_speed.py 2>/dev/null || true)"
    if [ -x "$fallback" ] && [ "$(realpath "$fallback")" != "$(realpath "${default:-/}")" ]; then
        fallback_seconds="$("$fallback" scripts/python_speed.py 2>/dev/null || true)"
        if [ -n "$fallback_seconds" ] && { [ -z "$seconds" ] ||
            awk -v a="$fallback_seconds" -v b="$seconds" 'BEGIN { exit !(a < 0.9 * b) }'; }; then
            echo "$fallback"
            return
        fi
    fi
    if [ -z "$seconds" ]; then
        echo "bootstrap: no Python 3.11+ with the venv module found (on Debian: apt-get install" \
            "python3-venv), or set PYTHON=/path/to/python3" >&2
        exit 1
    fi
    echo "$default"
}

stamp="$VENV/.lock-sha256"  # lock files' hash, interpreter, its real path and version
python=""
if [ -z "${PYTHON:-}" ] && [ -f "$stamp" ]; then
    python="$(sed -n 2p "$stamp")"  # an environment exists: keep its interpreter
fi
if [ -z "$python" ] || ! command -v "$python" >/dev/null; then
    python="$(choose_python)"
fi
identity="$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version.split()[0])')"
want="$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$want" ] && [ "$(sed -n 3p "$stamp")" = "$identity" ]; then
    exit 0
fi
echo "bootstrap: building $VENV with $python ($identity)" >&2
if [ -f "$stamp" ] && [ "$(sed -n 3p "$stamp")" != "$identity" ]; then
    "$python" -m venv --clear "$VENV"  # another interpreter: start afresh
else
    "$python" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
# torch is pinned in the lock file to the CPU wheel that pip finds through PIP_FIND_LINKS.
"$VENV/bin/pip" install -q -r requirements.lock
"$VENV/bin/pip" install -q --no-deps -e .
printf '%s\n%s\n%s\n' "$want" "$python" "$identity" > "$stamp"
