"""Resource limits and whole-tree cleanup for runtimes without a daemon (bubblewrap).

A per-session cgroup holds every process of the sandbox: ``pids.max`` contains fork bombs,
``memory.max`` and ``cpu.max`` the rest, and killing the cgroup ends every process the session
started, however it daemonized. cgroup v2 is used when its controllers are available, else the
v1 hierarchies (hybrid hosts). Without a writable cgroup tree (an unprivileged user without a
delegated cgroup) only ``RLIMIT_NPROC`` is left; ``doctor`` says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# No pydantic here: the job runner (standard library only) makes each job's cgroup with this too.


class Resources(Protocol):
    """The limits a cgroup is made with (framework.sandbox.spec.Resources, or a job's limits)."""

    @property
    def pids(self) -> int | None: ...
    @property
    def memory_bytes(self) -> int | None: ...
    @property
    def cpus(self) -> float | None: ...


CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


class CgroupUnavailable(RuntimeError):
    """No writable cgroup hierarchy with the needed controllers."""


def _v2_root(root: Path) -> Path | None:
    for candidate in (root, root / "unified"):
        controllers = candidate / "cgroup.controllers"
        if controllers.is_file() and "pids" in controllers.read_text().split():
            return candidate
    return None


@dataclass
class SessionCgroup:
    """The cgroup directories (one on v2, one per controller on v1) of a session."""

    dirs: list[Path]
    version: int
    procs_files: list[Path] = field(default_factory=list)

    @classmethod
    def create(
        cls, resources: Resources, root: Path = CGROUP_ROOT, prefix: str = "agentic-researcher"
    ) -> SessionCgroup:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        if not os.access(root, os.W_OK) and not os.access(root / "pids", os.W_OK):
            raise CgroupUnavailable(f"{root} is not writable by uid {os.getuid()}")
        v2 = _v2_root(root)
        try:
            if v2 is not None:
                return cls._create_v2(v2 / name, resources)
            return cls._create_v1(root, name, resources)
        except OSError as exc:
            raise CgroupUnavailable(f"cannot create a cgroup under {root}: {exc}") from exc

    @classmethod
    def _create_v2(cls, path: Path, resources: Resources) -> SessionCgroup:
        path.mkdir()
        if resources.pids is not None:
            (path / "pids.max").write_text(str(resources.pids))
        if resources.memory_bytes is not None:
            (path / "memory.max").write_text(str(resources.memory_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
        if resources.cpus is not None:
            (path / "cpu.max").write_text(f"{int(resources.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        return cls(dirs=[path], version=2, procs_files=[path / "cgroup.procs"])

    @classmethod
    def _create_v1(cls, root: Path, name: str, resources: Resources) -> SessionCgroup:
        wanted: dict[str, dict[str, str]] = {"pids": {}}
        if resources.pids is not None:
            wanted["pids"]["pids.max"] = str(resources.pids)
        if resources.memory_bytes is not None:
            wanted["memory"] = {"memory.limit_in_bytes": str(resources.memory_bytes)}
        if resources.cpus is not None:
            wanted["cpu"] = {
                "cpu.cfs_period_us": str(CPU_PERIOD_US),
                "cpu.cfs_quota_us": str(int(resources.cpus * CPU_PERIOD_US)),
            }
        group = cls(dirs=[], version=1)
        try:
            for controller, files in wanted.items():
                base = root / controller
                if not base.is_dir():
                    raise CgroupUnavailable(f"cgroup v1 controller {controller!r} is not mounted")
                path = base / name
                path.mkdir()
                group.dirs.append(path)
                for file_name, value in files.items():
                    (path / file_name).write_text(value)
                group.procs_files.append(path / "cgroup.procs")
        except BaseException:
            group.remove()
            raise
        return group

    def enter_argv(self) -> list[str]:
        """A prefix that moves the process into this cgroup before exec'ing the rest (no shell text
        is built: the paths are arguments)."""
        script = 'for f in "$@"; do case "$f" in --) shift; break;; esac; echo $$ > "$f"; shift; done; exec "$@"'
        return ["/bin/sh", "-c", script, "sh", *map(str, self.procs_files), "--"]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                found.update(int(line) for line in procs.read_text().split())
        return found

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup until it is empty (a fork bomb keeps forking)."""
        kill_file = self.dirs[0] / "cgroup.kill" if self.version == 2 else None
        if kill_file is not None and kill_file.exists():
            kill_file.write_text("1")
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        for path in reversed(self.dirs):
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def cgroup_support(root: Path = CGROUP_ROOT) -> tuple[bool, str]:
    """Whether sessions can get a cgroup here, and a sentence saying why or why not."""
    if _v2_root(root) is not None and os.access(_v2_root(root) or root, os.W_OK):
        return True, f"cgroup v2 at {_v2_root(root)} is writable"
    if (root / "pids").is_dir() and os.access(root / "pids", os.W_OK):
        return True, "cgroup v1 (pids, memory, cpu) is writable"
    return False, (
        f"no writable cgroup under {root} for uid {os.getuid()}: fork bombs are limited only by "
        "RLIMIT_NPROC and orphans by the PID namespace; run as root or with a delegated cgroup "
        "(systemd-run --user --scope) for hard limits"
    )
