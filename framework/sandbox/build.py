"""Build the sandbox image from ``container/`` through the Docker SDK, streaming progress.

A build container does not see the building host's package configuration, so on a host that
reaches Debian, npm or PyPI through its own mirrors (or through a TLS-inspecting proxy with a
locally added CA) ``apt-get``/``npm``/``pip`` inside the build would try their public defaults
and stall. :func:`host_build_args` reads that configuration from the host at build time and
passes it as build args; nothing about it is stored in the repository.

This module imports only the standard library at load time, so CI can run
``python3 -m framework.sandbox.build`` before any virtual environment exists: it prints the
host's build args as ``NAME=VALUE`` records separated by NUL bytes (values may span lines).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONTAINER_DIR = Path(__file__).resolve().parents[2] / "container"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
"""Where Debian's ``update-ca-certificates`` takes the certificates an administrator added."""

_DEB_LINE = re.compile(r"^deb(?:\s+\[[^]]*\])?\s+(\S+)")
_DEB822_URIS = re.compile(r"^URIs:\s*(.+)$", re.IGNORECASE)


def host_build_args(
    env: Mapping[str, str] = os.environ,
    apt_sources: Iterable[Path] = APT_SOURCES,
    ca_dir: Path = LOCAL_CA_DIR,
) -> dict[str, str]:
    """The Dockerfile's fetch-related build args, as this host is configured; unset ones are
    left out, so the build falls back to each tool's default."""
    args: dict[str, str] = {}
    mirror, security = apt_mirrors(apt_sources)
    if mirror:
        args["APT_MIRROR"] = mirror
    if security:
        args["APT_SECURITY_MIRROR"] = security
    if registry := npm_registry(env):
        args["NPM_CONFIG_REGISTRY"] = registry
    if index := pip_index_url(env):
        args["PIP_INDEX_URL"] = index
    if certificates := local_ca_certificates(ca_dir):
        args["EXTRA_CA_CERTS"] = certificates
    return args


def apt_mirrors(sources: Iterable[Path]) -> tuple[str | None, str | None]:
    """The first enabled Debian archive and Debian security URIs in the apt sources (one-line
    ``*.list`` or deb822 ``*.sources`` files)."""
    uris: list[str] = []
    for path in _source_files(sources):
        try:
            text = path.read_text(errors="replace")  # host-path: the host's apt sources (/etc/apt)
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if match := _DEB_LINE.match(line):
                uris.append(match.group(1))
            elif match := _DEB822_URIS.match(line):
                uris.extend(match.group(1).split())
    web = [u.rstrip("/") for u in uris if _shareable_url(u)]
    mirror = next((u for u in web if u.endswith("/debian")), None)
    security = next((u for u in web if u.endswith("/debian-security")), None)
    return mirror, security


def _source_files(sources: Iterable[Path]) -> Iterator[Path]:
    for source in sources:
        if source.is_dir():  # host-path: the host's apt sources
            yield from sorted(
                # host-path: the host's apt sources
                p
                for p in source.iterdir()
                if p.suffix in (".list", ".sources") and p.is_file()
            )
        elif source.is_file():  # host-path: the host's apt sources
            yield source


def npm_registry(env: Mapping[str, str]) -> str | None:
    """The registry npm on this host uses: ``npm config get registry`` when npm is installed,
    else the same sources read directly (environment, user npmrc, global npmrc)."""
    npm = shutil.which("npm", path=env.get("PATH"))
    if npm is not None:
        value = _first_line([npm, "config", "get", "registry"], env)
    else:
        value = _npmrc_registry(env, Path(env.get("HOME") or Path.home()))
    return _shareable_url(value)


def _npmrc_registry(env: Mapping[str, str], home: Path) -> str | None:
    for name in ("npm_config_registry", "NPM_CONFIG_REGISTRY"):
        if env.get(name):
            return env[name]
    user = Path(env.get("NPM_CONFIG_USERCONFIG") or home / ".npmrc")
    for npmrc in (user, Path("/etc/npmrc"), Path("/usr/etc/npmrc"), Path("/usr/local/etc/npmrc")):
        try:
            # host-path: the host user's and the system's npmrc
            lines = npmrc.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition("=")
            if key.strip() == "registry" and value.strip():
                return value.strip().strip("'\"")
    return None


def pip_index_url(env: Mapping[str, str]) -> str | None:
    """PIP_INDEX_URL, else ``index-url`` from pip's configuration files. A ``file:`` index
    names a host path the build cannot see, so it is left out."""
    value = env.get("PIP_INDEX_URL")
    if not value:
        listing = _output([sys.executable, "-m", "pip", "config", "list"], env) or ""
        for line in listing.splitlines():
            key, _, raw = line.partition("=")
            if key.strip() in ("global.index-url", "install.index-url"):
                value = raw.strip().strip("'\"")
                break
    return _shareable_url(value)


def _shareable_url(value: str | None) -> str | None:
    """An http(s) URL without credentials, else None: build args are kept in the image's
    history, where a password in an index URL would be readable by anyone with the image."""
    if not value or not value.startswith(("http://", "https://")):
        return None
    url = urlsplit(value)
    if url.username or url.password:
        print(
            f"build: not passing {url.scheme}://***@{url.hostname}/… to the build: it holds "
            "credentials, which would be stored in the image history; the build uses the "
            "tool's default index instead",
            file=sys.stderr,
        )
        return None
    return value


def local_ca_certificates(ca_dir: Path) -> str | None:
    """The PEM certificates added to this host's trust store, concatenated."""
    if not ca_dir.is_dir():  # host-path: the host's CA store (/usr/local/share)
        return None
    pems = []
    for path in sorted(ca_dir.rglob("*.crt")):  # host-path: the host's CA store
        try:
            text = path.read_text(errors="replace").strip()  # host-path: the host's CA store
        except OSError:
            continue
        if "-----BEGIN CERTIFICATE-----" in text:
            pems.append(text)
    return "\n".join(pems) or None


def _output(argv: list[str], env: Mapping[str, str]) -> str | None:
    try:
        done = subprocess.run(
            argv, env=dict(env), capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _first_line(argv: list[str], env: Mapping[str, str]) -> str | None:
    lines = (_output(argv, env) or "").strip().splitlines()
    return lines[-1].strip() if lines else None


def build_image(
    tag: str,
    base_image: str | None = None,
    build_args: dict[str, str] | None = None,
    on_line: Callable[[str], None] = print,
    use_host_config: bool = True,
) -> str:
    """Build ``container/Dockerfile`` as ``tag``; returns the image id.

    With ``use_host_config`` the host's mirrors, registries and added CAs are passed as build
    args (:func:`host_build_args`); explicit ``build_args`` win over them.
    """
    from framework.sandbox.runtime import SandboxError

    # host-path: the image build context in the checkout
    if not (CONTAINER_DIR / "Dockerfile").is_file():
        raise SandboxError(
            f"no Dockerfile in {CONTAINER_DIR}; is the package installed from a checkout?"
        )
    import docker

    try:
        # Long silent steps (npm install, texlive) must not hit the client's read timeout.
        client = docker.from_env(timeout=3600)
        client.ping()
    except Exception as exc:
        raise SandboxError(
            f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
        ) from None
    args = host_build_args() if use_host_config else {}
    if args:
        on_line(f"from this host's configuration: {', '.join(sorted(args))}")
    args.update(build_args or {})
    if base_image:
        args["BASE_IMAGE"] = base_image
    stream: Iterator[dict[str, Any]] = client.api.build(
        path=str(CONTAINER_DIR), tag=tag, buildargs=args, network_mode="host", decode=True, rm=True
    )
    image_id = ""
    for chunk in stream:
        if "error" in chunk:
            raise SandboxError(
                f"image build failed: {chunk['error'].strip()}. If a download failed or "
                "stalled, check that this host's apt sources, npm registry (`npm config get "
                "registry`) and pip index are reachable: the build uses the same ones"
            )
        if text := chunk.get("stream", "").rstrip():
            on_line(text)
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
    return image_id


def main() -> int:
    """Print the host's build args for shell scripts (``--build-arg`` per NUL-ended record)."""
    for name, value in host_build_args().items():
        sys.stdout.write(f"{name}={value}\0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
