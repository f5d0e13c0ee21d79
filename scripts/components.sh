#!/usr/bin/env bash
# Install and start the named system components (.ci/components/NN-NAME.sh), as root.
# Usage: scripts/components.sh bwrap lm-corpus agent-clis
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/components.sh installs system packages: run it as root (or with sudo)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Package lists may be missing on a fresh machine; refresh them at most once an hour.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -n 1)" ]; then
    apt-get update -qq
fi
for name in "$@"; do
    script=$(ls .ci/components/[0-9][0-9]-"${name}".sh 2>/dev/null | head -n 1)
    if [ -z "${script}" ]; then
        echo "no component named ${name} in .ci/components/" >&2
        exit 1
    fi
    bash "${script}"
done
