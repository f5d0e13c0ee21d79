#!/usr/bin/env bash
# Headless Chromium (Debian package) for the HTML report test of the audit. Idempotent.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
chromium --version
