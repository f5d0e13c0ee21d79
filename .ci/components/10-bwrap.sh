#!/usr/bin/env bash
# bubblewrap: the embedded sandbox runtime (no daemon). Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v bwrap >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends bubblewrap python3 >/dev/null
fi
# Smoke test: a user + pid namespace with only loopback networking must work on this kernel.
bwrap --ro-bind / / --unshare-user --unshare-pid --unshare-net --proc /proc --dev /dev true
echo "bubblewrap $(bwrap --version | awk '{print $2}') ready"
