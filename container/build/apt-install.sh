#!/bin/sh
# apt-get install for image builds. When the build passes APT_MIRROR (the Debian mirror the
# building host uses; `agentic-researcher build` reads it from the host's apt sources), a Debian
# base fetches from it during this step only: the image's own sources are set aside and put
# back, so the finished image keeps the sources its base shipped with.
set -eu

saved=""
if [ -n "${APT_MIRROR:-}" ]; then
    . /etc/os-release
    if [ "${ID:-}" = debian ] && [ -n "${VERSION_CODENAME:-}" ]; then
        saved="$(mktemp -d)"
        mv /etc/apt/sources.list /etc/apt/sources.list.d "$saved/" 2>/dev/null || true
        mkdir -p /etc/apt/sources.list.d
        {
            echo "deb ${APT_MIRROR} ${VERSION_CODENAME} main"
            echo "deb ${APT_MIRROR} ${VERSION_CODENAME}-updates main"
            if [ -n "${APT_SECURITY_MIRROR:-}" ]; then
                echo "deb ${APT_SECURITY_MIRROR} ${VERSION_CODENAME}-security main"
            fi
        } >/etc/apt/sources.list
    else
        echo "apt-install: APT_MIRROR is a Debian mirror but the base is ${ID:-unknown}; using its own sources" >&2
    fi
fi

restore() {
    if [ -n "$saved" ]; then
        rm -rf /etc/apt/sources.list /etc/apt/sources.list.d
        mv "$saved"/* /etc/apt/ 2>/dev/null || true
        rm -rf "$saved"
    fi
    rm -rf /var/lib/apt/lists/*
}
trap restore EXIT

log="$(mktemp)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"; } >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "apt-install: installing $* failed (output above)" >&2
    exit 1
fi
rm -f "$log"
echo "apt-install: $*"
