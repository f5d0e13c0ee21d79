"""Docker backend, through the Docker SDK (no shelling out to the docker CLI).

The container starts as root with only SETUID/SETGID/SETPCAP so the image's entrypoint can give
the host uid a name and drop to it with an empty bounding set and ``no_new_privs``; Docker's own
``no-new-privileges`` and ``init`` are on, the PID namespace is private, no socket of the daemon
is mounted. ``none`` and ``allowlist`` use ``network_mode=none`` (the egress proxy and model
bridge arrive as Unix sockets); ``open`` uses the host network, as there is no bridge here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import sys
from pathlib import Path
from typing import Any

from framework.sandbox.gpu import docker_device_requests
from framework.sandbox.runtime import (
    Availability,
    RunResult,
    SandboxError,
    Stdio,
    forwarded_argv,
)
from framework.sandbox.spec import BRIDGE_DIR, SandboxSpec

ENTRYPOINT_CAPS = ["SETUID", "SETGID", "SETPCAP"]


@functools.cache
def _client() -> Any:
    """One client per process (its connection pool makes repeated launches cheaper)."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        raise SandboxError(
            f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
        ) from None
    return client


def container_config(
    spec: SandboxSpec, bridge_dir: Path | None, api_version: str = "1.41"
) -> dict[str, Any]:
    """Keyword arguments for the low-level ``create_container`` (pure: unit-testable without a
    daemon). The low-level API saves the extra inspect call of ``containers.create``."""
    from docker.types import HostConfig, Mount

    mounts = [
        Mount(target=str(m.target), source=str(m.source), type="bind", read_only=m.read_only)
        for m in spec.mounts
    ]
    if bridge_dir is not None:
        mounts.append(
            Mount(target=str(BRIDGE_DIR), source=str(bridge_dir), type="bind", read_only=True)
        )
    limits: dict[str, Any] = {}
    if spec.resources.memory_bytes is not None:
        limits["mem_limit"] = spec.resources.memory_bytes
        limits["memswap_limit"] = spec.resources.memory_bytes
    if spec.resources.cpus is not None:
        limits["nano_cpus"] = int(spec.resources.cpus * 1e9)
    host_config = HostConfig(
        version=api_version,
        mounts=mounts,
        network_mode="host" if spec.network == "open" else "none",
        cap_drop=["ALL"],
        cap_add=ENTRYPOINT_CAPS,
        security_opt=["no-new-privileges"],
        init=True,
        pids_limit=spec.resources.pids or -1,
        ipc_mode="private",
        tmpfs={"/tmp": "rw,nosuid,nodev,mode=1777"},
        device_requests=docker_device_requests(spec.gpus),
        **limits,
    )
    env = dict(spec.env)
    env["AR_UID"] = str(spec.uid)
    env["AR_GID"] = str(spec.gid)
    return {
        "image": spec.image,
        "command": forwarded_argv(spec, BRIDGE_DIR),
        "environment": env,
        "working_dir": str(spec.workdir),
        "hostname": spec.hostname,
        "labels": {"agentic-researcher": "1", **spec.labels},
        "tty": spec.interactive,
        "stdin_open": spec.interactive,
        "host_config": host_config,
    }


class DockerRuntime:
    name = "docker"

    def availability(self) -> Availability:
        try:
            client = _client()
        except SandboxError as exc:
            return Availability(False, str(exc))
        except ImportError:
            return Availability(False, "the docker Python package is not installed")
        info = client.info()
        return Availability(
            True,
            f"engine {info.get('ServerVersion')} (cgroup v{info.get('CgroupVersion', '?')}, "
            f"{info.get('CgroupDriver', '?')} driver)",
        )

    def run(self, spec: SandboxSpec, bridge_dir: Path | None, stdio: Stdio) -> RunResult:
        if spec.image is None:
            raise SandboxError("the docker runtime needs an image (sandbox.image)")
        import docker.errors

        api = _client().api
        try:
            config = container_config(spec, bridge_dir, api.api_version)
            container_id = str(api.create_container(**config)["Id"])
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"image {spec.image!r} not found; build it with `agentic-researcher build`"
            ) from None
        if spec.detach:
            api.start(container_id)
            return RunResult(exit_code=0, container_id=container_id)
        try:
            if spec.interactive:
                return self._run_tty(api, container_id)
            return self._run_headless(api, container_id, stdio)
        finally:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True)

    def _run_headless(self, api: Any, container_id: str, stdio: Stdio) -> RunResult:
        stream = api.attach(
            container_id, stdout=True, stderr=True, stream=True, logs=True, demux=True
        )
        api.start(container_id)
        out_chunks: list[bytes] = []
        err_chunks: list[bytes] = []
        for out, err in stream:
            if out:
                out_chunks.append(out) if stdio.capture else _write(stdio.stdout, out, sys.stdout)
            if err:
                err_chunks.append(err) if stdio.capture else _write(stdio.stderr, err, sys.stderr)
        code = int(api.wait(container_id)["StatusCode"])
        if stdio.capture:
            return RunResult(code, b"".join(out_chunks), b"".join(err_chunks), container_id)
        return RunResult(code, container_id=container_id)

    def _run_tty(self, api: Any, container_id: str) -> RunResult:
        """Relay the user's terminal to the container's own pty, in raw mode."""
        import termios
        import tty

        sock = api.attach_socket(
            container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        raw_sock = sock._sock
        api.start(container_id)
        stdin_fd = sys.stdin.fileno()
        saved = termios.tcgetattr(stdin_fd) if os.isatty(stdin_fd) else None
        if saved is not None:
            tty.setraw(stdin_fd)
            size = os.get_terminal_size(stdin_fd)
            with contextlib.suppress(Exception):
                api.resize(container_id, height=size.lines, width=size.columns)
        try:
            while True:
                ready, _, _ = select.select([stdin_fd, raw_sock], [], [], 0.5)
                if raw_sock in ready:
                    data = raw_sock.recv(65536)
                    if not data:
                        break
                    os.write(sys.stdout.fileno(), data)
                if stdin_fd in ready:
                    data = os.read(stdin_fd, 65536)
                    if not data:
                        break
                    raw_sock.sendall(data)
        finally:
            if saved is not None:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        return RunResult(int(api.wait(container_id)["StatusCode"]), container_id=container_id)


def _write(target: Any, data: bytes, default: Any) -> None:
    if isinstance(target, int):
        os.write(target, data)
    elif target is not None:
        target.write(data)
        target.flush()
    else:
        default.buffer.write(data)
        default.buffer.flush()


RUNTIME = DockerRuntime()
