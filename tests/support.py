"""Shared test helpers: real-component requirements that skip locally and fail under CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO_ROOT = Path(__file__).resolve().parent.parent


def unavailable(component: str, why: str) -> None:
    """A real component is missing: skip on a developer machine, fail in CI (a skip there hides a gap)."""
    message = f"{component} unavailable: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true: real-component tests must run)", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, component: str | None = None) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(component or name, f"{name!r} is not on PATH")
    assert path is not None
    return path


def require_bwrap() -> str:
    path = require_binary("bwrap", "bubblewrap")
    probe = subprocess.run(
        [path, "--ro-bind", "/", "/", "--unshare-user", "--unshare-pid", "--proc", "/proc", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        unavailable("bubblewrap", f"cannot create a sandbox: {probe.stderr.strip()}")
    return path


def require_docker():  # type: ignore[no-untyped-def]
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        unavailable("docker engine", str(exc))
    return client
