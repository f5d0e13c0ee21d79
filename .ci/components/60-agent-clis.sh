#!/usr/bin/env bash
# Agent CLIs for the agent_cli tests and the demo: Claude Code, Codex, Gemini CLI and OpenCode from
# npm at pinned versions into one fixed prefix, plus an unprivileged user to run them (Claude Code
# refuses --dangerously-skip-permissions as root). Idempotent: skips what is already in place.
set -euo pipefail

# Under /usr so the bubblewrap sandbox, which mounts the host /usr read-only, sees the CLIs too.
PREFIX="${AGENT_CLIS_PREFIX:-/usr/local/lib/agent-clis}"
RUN_USER="${AGENT_CLIS_USER:-ar-agent}"
PACKAGES=(
    "@anthropic-ai/claude-code@2.1.330"
    "@openai/codex@0.169.0"
    "@google/gemini-cli@0.61.0"
    "opencode-ai@1.18.33"
)

if ! command -v npm >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# Gemini CLI 0.61.0 declares node >= 20 (engines); Debian 12's own nodejs is 18. The host's Node
# is what the CLIs run on in the bubblewrap sandbox too (the image brings its own Node 22).
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "60-agent-clis: Node.js $(node --version) is too old for Gemini CLI (needs >= 20);" \
        "install Node.js 20 or later (e.g. from NodeSource) and run this again" >&2
    exit 1
fi

want="$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -d' ' -f1)"
stamp="$PREFIX/.pinned-sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    mkdir -p "$PREFIX"
    npm install --global --prefix "$PREFIX" --no-fund --no-audit --loglevel=error "${PACKAGES[@]}"
    echo "$want" > "$stamp"
fi

for bin in claude codex gemini opencode; do
    if [ ! -x "$PREFIX/bin/$bin" ]; then
        echo "60-agent-clis: $PREFIX/bin/$bin missing after install" >&2
        exit 1
    fi
    ln -sf "$PREFIX/bin/$bin" "/usr/local/bin/$bin"
done

if ! id -u "$RUN_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$RUN_USER"
fi

for bin in claude codex gemini opencode; do
    echo "$bin $("$PREFIX/bin/$bin" --version)"
done
