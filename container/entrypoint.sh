#!/bin/sh
# Started as root with only CAP_SETUID, CAP_SETGID and CAP_SETPCAP (the launcher drops the rest).
# Gives the host user's uid/gid a name (tools such as git and ssh look it up), then becomes that
# user for good: no capabilities in any set, empty bounding set, no_new_privs.
set -eu

if [ "$(id -u)" = 0 ] && [ -n "${AR_UID:-}" ]; then
    uid="$AR_UID"
    gid="${AR_GID:-$AR_UID}"
    case "$uid$gid" in *[!0-9]*) echo "ar-entrypoint: AR_UID/AR_GID must be numbers" >&2; exit 64 ;; esac
    if [ "$uid" = 0 ]; then
        echo "ar-entrypoint: refusing to run the agent as root (AR_UID=0)" >&2
        exit 64
    fi
    getent group "$gid" >/dev/null || echo "agent:x:$gid:" >>/etc/group
    getent passwd "$uid" >/dev/null || echo "agent:x:$uid:$gid:agent:${HOME:-/tmp}:/bin/sh" >>/etc/passwd
    unset AR_UID AR_GID
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups \
        --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs -- "$@"
fi
exec "$@"
