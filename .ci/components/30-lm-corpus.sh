#!/usr/bin/env bash
# Text corpus for the small language model of experiments/lm: the English quotations that
# Debian ships in the fortunes packages (about 2.5 MB under /usr/share/games/fortunes).
# Idempotent: installs nothing when the files are already there.
set -euo pipefail

if [ -s /usr/share/games/fortunes/fortunes ] && [ -s /usr/share/games/fortunes/literature ]; then
    echo "lm corpus: already installed"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends fortunes fortunes-min >/dev/null
test -s /usr/share/games/fortunes/literature
echo "lm corpus: installed $(du -sh /usr/share/games/fortunes | cut -f1)"
