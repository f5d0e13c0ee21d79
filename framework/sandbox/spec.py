"""What a sandbox must look like, independent of the runtime that builds it.

A :class:`SandboxSpec` is the single input of every backend (bwrap, docker, podman, apptainer).
The launcher fills it from the settings, the workspace and the agent profile; backends only
translate it. Validation happens here, once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NetworkPolicy = Literal["none", "allowlist", "open"]

SANDBOX_HOME = Path("/home/agent")
"""HOME inside every sandbox: the per-project agent state dir is mounted here."""

BRIDGE_DIR = Path("/run/agentic-researcher")
"""Where the launcher's Unix sockets and the in-sandbox forwarder are mounted."""

PROXY_PORT = 3128
"""Loopback port inside the sandbox on which the egress proxy is reachable (allowlist policy)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BindMount(_Model):
    """A host path made visible at ``target`` inside the sandbox."""

    source: Path
    target: Path
    read_only: bool = True

    @field_validator("source", "target")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"mount paths must be absolute, got {str(value)!r}")
        return value


class PortForward(_Model):
    """A loopback TCP port inside the sandbox that leads to a Unix socket of the launcher."""

    port: int = Field(ge=1, le=65535)
    socket: Path


class Resources(_Model):
    pids: int | None = Field(default=4096, ge=16, description="most processes and threads at once")
    memory_bytes: int | None = Field(default=None, ge=16 * 2**20)
    cpus: float | None = Field(default=None, gt=0)


class SandboxSpec(_Model):
    """Everything a runtime needs to start one sandboxed process tree."""

    argv: list[str] = Field(min_length=1)
    image: str | None = Field(default=None, description="container image; bwrap uses the host /usr")
    workdir: Path
    mounts: list[BindMount] = Field(default_factory=list)
    uid: int = Field(
        default=1000, ge=1, description="never root: agents refuse or misbehave as root"
    )
    gid: int = Field(default=1000, ge=1)
    home: Path = SANDBOX_HOME
    env: dict[str, str] = Field(default_factory=dict, description="the complete environment inside")
    network: NetworkPolicy = "none"
    forwards: list[PortForward] = Field(default_factory=list)
    gpus: str = "none"
    resources: Resources = Field(default_factory=Resources)
    interactive: bool = False
    detach: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    hostname: str = "ar-sandbox"

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if "\0" in value:
                raise ValueError(f"environment variable {name} contains a NUL byte")
        return env

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: str) -> str:
        if value in ("none", "all") or re.fullmatch(r"\d+(,\d+)*", value):
            return value
        raise ValueError(f"gpus must be 'none', 'all', a count or ids like '0,1', got {value!r}")

    @model_validator(mode="after")
    def _consistent(self) -> SandboxSpec:
        if self.network == "none" and self.forwards:
            raise ValueError(
                "network 'none' allows no way out, so it cannot forward ports "
                "(use network 'allowlist' to reach the egress proxy or a model endpoint)"
            )
        targets = [m.target for m in self.mounts]
        duplicates = {str(t) for t in targets if targets.count(t) > 1}
        if duplicates:
            raise ValueError(f"two mounts share a target: {sorted(duplicates)}")
        return self

    @property
    def gpu_ids(self) -> list[int] | None:
        """Device ids when specific GPUs were asked for, else None ('all' or a count)."""
        if "," in self.gpus:
            return [int(i) for i in self.gpus.split(",")]
        return None


def allowlisted_env(
    host_env: Mapping[str, str], allowlist: list[str], explicit: Mapping[str, str]
) -> dict[str, str]:
    """The sandbox environment: allowlisted host variables that are set, then explicit values."""
    env = {name: host_env[name] for name in allowlist if name in host_env}
    env.update(explicit)
    return env
