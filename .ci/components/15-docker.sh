#!/usr/bin/env bash
# Docker engine + the agentic-researcher image, built on a base image made here (no registry).
# Idempotent: reuses a running daemon, an existing base image and the build cache (an unchanged
# image rebuilds in seconds).
#
# The CI image is built with INSTALL_AGENTS=1 (Node.js 22, the four agent CLIs, uv: the Docker
# agent tests run the real Claude Code in it) and INSTALL_LATEX=0 (no test compiles LaTeX; it
# would add about 190 MB and a minute). The build reaches Debian, npm and PyPI through this
# machine's own configuration, read at run time by `python3 -m framework.sandbox.build`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/../.."

BASE_TAG="${AR_CI_BASE_IMAGE:-local/debian-minbase:bookworm}"
IMAGE_TAG="${AR_CI_IMAGE:-agentic-researcher:latest}"
DATA_ROOT=/var/lib/docker-ci
EXEC_ROOT=/run/docker-ci
SOCKET=/run/docker.sock

need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)
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

# APT_MIRROR, NPM_CONFIG_REGISTRY, EXTRA_CA_CERTS, ... as NAME=VALUE records ended by NUL.
build_args=()
mirror=""
while IFS= read -r -d '' record; do
    build_args+=(--build-arg "${record}")
    [[ "${record}" == APT_MIRROR=* ]] && mirror="${record#APT_MIRROR=}"
done < <(python3 -m framework.sandbox.build)

if ! docker image inspect "${BASE_TAG}" >/dev/null 2>&1; then
    : "${mirror:?could not read a Debian mirror from /etc/apt/sources*}"
    rootfs="$(mktemp -d /var/tmp/ar-minbase.XXXXXX)"
    debootstrap --variant=minbase bookworm "${rootfs}" "${mirror}" >/var/log/ar-debootstrap.log 2>&1 || {
        tail -20 /var/log/ar-debootstrap.log >&2
        exit 1
    }
    tar -C "${rootfs}" -c . | docker import - "${BASE_TAG}" >/dev/null
    rm -rf "${rootfs}"
fi

started=${SECONDS}
if ! docker build --network host "${build_args[@]}" \
    --build-arg "BASE_IMAGE=${BASE_TAG}" \
    --build-arg INSTALL_AGENTS=1 --build-arg INSTALL_LATEX=0 \
    -t "${IMAGE_TAG}" container/ >/var/log/ar-docker-build.log 2>&1; then
    tail -40 /var/log/ar-docker-build.log >&2
    echo "image build failed; full log in /var/log/ar-docker-build.log" >&2
    exit 1
fi
echo "image ${IMAGE_TAG} built in $((SECONDS - started)) s"
echo "docker $(docker version --format '{{.Server.Version}}') ready; image ${IMAGE_TAG}"
