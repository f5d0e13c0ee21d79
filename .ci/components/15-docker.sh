#!/usr/bin/env bash
# Docker engine + the agentic-researcher image, built on a base image made here (no registry).
# Idempotent: reuses a running daemon, an existing base image and the build cache.
#
# The CI image is built with INSTALL_AGENTS=0 and INSTALL_LATEX=0: it carries git, Python and
# the entrypoint (all the sandbox tests need) but not Node.js, the agent CLIs or LaTeX, which
# would add several minutes and about 1.5 GB. Users build the full image with
# `agentic-researcher build` (defaults: everything installed).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/../.."

BASE_TAG="${AR_CI_BASE_IMAGE:-local/debian-minbase:bookworm}"
IMAGE_TAG="${AR_CI_IMAGE:-agentic-researcher:latest}"
DATA_ROOT=/var/lib/docker-ci
EXEC_ROOT=/run/docker-ci
SOCKET=/run/docker.sock

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if ((${#need[@]})); then
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! docker -H "unix://${SOCKET}" info >/dev/null 2>&1; then
    # No systemd and no bridge on these machines: run the daemon by hand without networking setup.
    mkdir -p "${DATA_ROOT}" "${EXEC_ROOT}"
    nohup dockerd --iptables=false --ip-masq=false --bridge=none \
        --host "unix://${SOCKET}" --data-root "${DATA_ROOT}" --exec-root "${EXEC_ROOT}" \
        >/var/log/dockerd-ci.log 2>&1 &
    for _ in $(seq 1 60); do
        docker -H "unix://${SOCKET}" info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker -H "unix://${SOCKET}" info >/dev/null 2>&1 || {
        echo "dockerd did not start; see /var/log/dockerd-ci.log" >&2
        tail -20 /var/log/dockerd-ci.log >&2
        exit 1
    }
fi
export DOCKER_HOST="unix://${SOCKET}"

if ! docker image inspect "${BASE_TAG}" >/dev/null 2>&1; then
    # The mirror is whatever this machine's apt sources use (deb822 or one-line format).
    sources=(/etc/apt/sources.list /etc/apt/sources.list.d)
    mirror="$( (grep -rhoE '^(URIs:|deb)( +\[[^]]*\])? +[^ ]+' "${sources[@]}" 2>/dev/null || true) \
        | awk '{print $NF}' | grep -E '/debian/?$' | head -1)"
    : "${mirror:?could not read an apt mirror from /etc/apt/sources*}"
    rootfs="$(mktemp -d /var/tmp/ar-minbase.XXXXXX)"
    debootstrap --variant=minbase bookworm "${rootfs}" "${mirror}" >/var/log/ar-debootstrap.log 2>&1 || {
        tail -20 /var/log/ar-debootstrap.log >&2
        exit 1
    }
    tar -C "${rootfs}" -c . | docker import - "${BASE_TAG}" >/dev/null
    rm -rf "${rootfs}"
fi

if ! docker image inspect "${IMAGE_TAG}" >/dev/null 2>&1 || [[ "${AR_CI_REBUILD:-0}" == 1 ]]; then
    docker build --network host -q \
        --build-arg "BASE_IMAGE=${BASE_TAG}" \
        --build-arg INSTALL_AGENTS=0 --build-arg INSTALL_LATEX=0 \
        -t "${IMAGE_TAG}" container/ >/dev/null
fi
echo "docker $(docker version --format '{{.Server.Version}}') ready; image ${IMAGE_TAG}"
