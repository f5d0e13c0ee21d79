"""Jobs run inside a bubblewrap sandbox on the node: the agent's code is no more trusted there.

Split in two so that starting a job stays cheap:

- the broker (:func:`sandbox_plan`, at submit time, pydantic already loaded) turns the request into
  a :class:`~framework.sandbox.spec.SandboxSpec` and lets the bwrap backend build the command line
  once per submission, minus what only the node knows;
- the runner (:func:`wrap_in_sandbox`, standard library only) adds the run directory, the GPU
  device nodes present on the node and the job's environment, and checks again that no mounted
  path has been swapped for a symlink since submission.

What a job sees: the workspace snapshot (see snapshot.py) read-only at the workspace's own path,
the workspace's git-ignored paths read-only from the live workspace, its run directory read-write,
``settings.sandbox.mounts`` as configured, the host ``/usr`` read-only, a private ``/tmp`` and
``$HOME``; no network (loopback only) for single-task jobs. Nothing of the host home (``~/.ssh``),
the state dir, the ledger or other runs.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from framework.config import Settings
    from framework.dispatch.snapshot import Snapshot

JobSandboxMode = Literal["required", "off"]
# The default (settings.cluster.job_sandbox = "required") treats the agent as untrusted: its jobs
# run sandboxed unless the user turns that off, and a node without bwrap fails the run.

RUNTIME = "bwrap"
INSIDE_HOME = "/home/agent"
ARGV_PLACEHOLDER = "__AR_JOB_ARGV__"
_ROOT_RO = ("--remount-ro", "/")


class JobSandboxError(RuntimeError):
    """The job cannot be sandboxed on this node; the message says what to fix."""


class WrappedJob(NamedTuple):
    argv: list[str]
    env: dict[str, str]
    """Environment of the bwrap process itself (the job's is passed with --setenv)."""
    cwd: str
    info: dict[str, Any]
    """What the runner records in ``started.<rank>.json``."""


def job_sandbox_mode(settings: Settings) -> JobSandboxMode:
    return settings.cluster.job_sandbox


def sandbox_ids() -> tuple[int, int]:
    """Never root inside: as root, uid 1000 inside maps back to root outside (bwrap's user ns)."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    return 1000, 1000


def write_identity_files(etc_dir: Path) -> Path:
    """``passwd``/``group`` for the sandbox user, shared by all runs (read-only inside)."""
    uid, gid = sandbox_ids()
    etc_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"agent:x:{uid}:{gid}:agent:{INSIDE_HOME}:/bin/bash\n",
        "group": f"root:x:0:\nagent:x:{gid}:\n",
    }
    for name, text in files.items():
        path = etc_dir / name
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_name(f".{name}.{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, path)
    return etc_dir


def sandbox_plan(
    settings: Settings,
    workspace: Path,
    cwd: Path,
    snapshot: Snapshot | None,
    world_size: int,
    etc_dir: Path,
) -> dict[str, Any]:
    """The part of the job's sandbox the broker decides; stored in ``task.json`` as ``sandbox``."""
    from framework.sandbox.bwrap import BwrapRuntime
    from framework.sandbox.spec import BindMount, SandboxSpec

    source = snapshot.root if snapshot is not None else workspace
    mounts = [BindMount(source=source, target=workspace, read_only=True)]
    checked = [str(workspace)]
    for relative in snapshot.ignored if snapshot is not None else []:
        live = workspace / relative
        mounts.append(BindMount(source=live, target=live, read_only=True))
        checked.append(str(live))
    for mount in settings.sandbox.mounts:
        target = mount.target or mount.source
        mounts.append(BindMount(source=mount.source, target=target, read_only=mount.read_only))
    uid, gid = sandbox_ids()
    # Ranks of a multi-task job are separate sandboxes that must reach each other (MASTER_ADDR):
    # they share the node's network; a single-task job gets loopback only.
    network = "none" if world_size == 1 else "open"
    spec = SandboxSpec(
        argv=[ARGV_PLACEHOLDER],
        workdir=cwd,
        mounts=sorted(mounts, key=lambda m: len(m.target.parts)),
        uid=uid,
        gid=gid,
        home=Path(INSIDE_HOME),
        network=network,
        hostname=socket.gethostname()[:63] or "node",
    )
    template = BwrapRuntime().argv(spec, None, etc_dir)
    return {
        "runtime": RUNTIME,
        "template": template,
        "checked_paths": checked,
        "workspace": str(workspace),
        "snapshot": str(snapshot.root) if snapshot is not None else None,
        "network": network,
    }


def _refuse_symlinked(path: Path, workspace: Path) -> None:
    """A mounted path must not have become a link since submission (bwrap would follow it)."""
    current = workspace
    if path != workspace:
        for part in path.relative_to(workspace).parts:
            current = current / part
            if current.is_symlink():
                raise JobSandboxError(
                    f"{current} is a symbolic link (to {os.readlink(current)}); jobs never mount "
                    "links from the workspace. Replace it with the real directory and resubmit"
                )


def wrap_in_sandbox(argv: list[str], env: Mapping[str, str], task: Mapping[str, Any]) -> WrappedJob:
    """The runner's side: the bwrap command line for this rank on this node."""
    plan = task["sandbox"]
    binary = shutil.which("bwrap")
    if binary is None:
        raise JobSandboxError(
            f"jobs run sandboxed (cluster.job_sandbox = 'required') but bwrap is not installed on "
            f"node {socket.gethostname()}: install bubblewrap there, or set "
            "cluster.job_sandbox = 'off' to run jobs unsandboxed"
        )
    template: list[str] = list(plan["template"])
    workspace = Path(plan["workspace"])
    for checked in plan["checked_paths"]:
        _refuse_symlinked(Path(checked), workspace)
    try:
        clear = template.index("--clearenv")
        root_ro = max(i for i in range(clear) if tuple(template[i : i + 2]) == _ROOT_RO)
    except ValueError:
        raise JobSandboxError(
            "the sandbox template in task.json has an unexpected shape (no --clearenv or "
            "--remount-ro /); resubmit the job with this version of the broker"
        ) from None
    run_dir = str(task["run_dir"])
    node_specific = ["--bind", run_dir, run_dir]
    gpu_nodes: list[str] = []
    if env.get("CUDA_VISIBLE_DEVICES"):
        from framework.sandbox.gpu import nvidia_device_nodes

        present, controls = nvidia_device_nodes()
        for node in [*(Path(f"/dev/nvidia{i}") for i in present), *controls]:
            node_specific += ["--dev-bind", str(node), str(node)]
            gpu_nodes.append(str(node))
    inside_env = {**env, "HOME": INSIDE_HOME, "USER": "agent", "LOGNAME": "agent", "TMPDIR": "/tmp"}
    setenv: list[str] = []
    for name, value in sorted(inside_env.items()):
        setenv += ["--setenv", name, value]
    placeholder = template.index(ARGV_PLACEHOLDER)
    wrapped = [
        binary,
        *template[1:root_ro],
        *node_specific,
        *template[root_ro : clear + 1],
        *setenv,
        *template[clear + 1 : placeholder],
        *argv,
        *template[placeholder + 1 :],
    ]
    info = {
        "runtime": RUNTIME,
        "network": plan["network"],
        "snapshot": plan["snapshot"],
        "gpu_device_nodes": gpu_nodes,
    }
    # bwrap stays in the sandbox as PID 1, whose environment is readable there: give it nothing.
    return WrappedJob(wrapped, {"PATH": "/usr/bin:/bin"}, run_dir, info)
