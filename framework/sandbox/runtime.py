"""The runtime protocol every backend implements, and the registry that picks one by name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from framework.sandbox.spec import SandboxSpec

RUNTIME_MODULES = {
    "bwrap": "framework.sandbox.bwrap",
    "docker": "framework.sandbox.docker",
    "podman": "framework.sandbox.podman",
    "apptainer": "framework.sandbox.apptainer",
}


class SandboxError(RuntimeError):
    """The sandbox could not be started; the message says what to fix."""


@dataclass(frozen=True)
class Availability:
    ok: bool
    detail: str


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: bytes | None = None
    stderr: bytes | None = None
    container_id: str | None = None


@dataclass(frozen=True)
class Stdio:
    """Where the sandboxed process reads and writes; ``capture`` collects output instead."""

    stdin: IO[bytes] | int | None = None
    stdout: IO[bytes] | int | None = None
    stderr: IO[bytes] | int | None = None
    capture: bool = False


class Runtime(Protocol):
    name: str

    def availability(self) -> Availability:
        """Whether this runtime can start sandboxes on this host, and why not."""
        ...

    def run(self, spec: SandboxSpec, bridge_dir: Path | None, stdio: Stdio) -> RunResult:
        """Start the sandbox, wait for it, and make sure nothing it started is left running."""
        ...


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIME_MODULES:
        raise SandboxError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIME_MODULES)}")
    module = importlib.import_module(RUNTIME_MODULES[name])
    runtime: Runtime = module.RUNTIME
    return runtime


def forwarded_argv(spec: SandboxSpec, inside_bridge: Path, python: str = "python3") -> list[str]:
    """The agent argv, prefixed with the in-sandbox forwarder when ports are forwarded."""
    if not spec.forwards:
        return list(spec.argv)
    maps = [f"{f.port}={inside_bridge / f.socket.name}" for f in spec.forwards]
    return [python, str(inside_bridge / "forward.py"), *maps, "--", *spec.argv]
