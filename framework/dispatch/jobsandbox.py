"""Jobs run inside a sandbox on the node (bubblewrap, or a Docker container with
``cluster.job_runtime = "docker"``): the agent's code is no more trusted there.

Split in two so that starting a job stays cheap:

- the broker (:func:`sandbox_plan`, at submit time, pydantic already loaded) turns the request into
  a :class:`~framework.sandbox.spec.SandboxSpec` and builds the runtime's command line (``bwrap``
  from the bwrap backend, or ``docker run``) once per submission, minus what only the node knows;
- the runner (:func:`wrap_in_sandbox`, standard library only) adds the run directory, the GPUs of
  the node and the job's environment, and opens every mounted path of the workspace once, through
  no link (an ``O_PATH`` descriptor, :func:`framework.safefs.open_path`): bwrap mounts that
  descriptor (``--ro-bind-fd``), never the name again, so a directory swapped for a link after
  the check cannot put a host directory into the job. Docker's daemon resolves names itself and
  cannot mount a descriptor of ours, so there the job's first step compares each mount's
  device and inode with what the runner opened, and refuses to run on a mismatch.

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
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, NoReturn

from framework import safefs
from framework.dispatch.jobnet import IFNAME, KEY_VARIABLE, rank_address

if TYPE_CHECKING:
    from framework.config import Settings
    from framework.dispatch.models import Resources
    from framework.dispatch.snapshot import Snapshot
    from framework.evaluation import Evaluation
    from framework.sandbox.cgroups import SessionCgroup
    from framework.sandbox.spec import BindMount, SandboxSpec

JobSandboxMode = Literal["required", "off"]
# The default (settings.cluster.job_sandbox = "required") treats the agent as untrusted: its jobs
# run sandboxed unless the user turns that off, and a node without the runtime fails the run.
JobRuntime = Literal["bwrap", "docker"]
JobNetwork = Literal["none", "private", "open"]

INSIDE_HOME = "/home/agent"
MIN_JOB_MEMORY = 16 << 20
ARGV_PLACEHOLDER = "__AR_JOB_ARGV__"
_ROOT_RO = ("--remount-ro", "/")


class JobSandboxError(RuntimeError):
    """The job cannot be sandboxed on this node; the message says what to fix."""


class WrappedJob(NamedTuple):
    argv: list[str]
    env: dict[str, str]
    """Environment of the runtime's process itself (bwrap: only PATH, the job's is passed with
    --setenv; docker: the values of the variables that ``--env NAME`` names)."""
    cwd: str
    info: dict[str, Any]
    """What the runner records in ``started.<rank>.json``."""
    stop: list[str] | None = None
    """Run this after killing ``argv`` to end the job for good (a container outlives its client)."""
    pass_fds: tuple[int, ...] = ()
    """Descriptors ``argv`` mounts (bwrap's ``--ro-bind-fd``): the caller passes them to the
    process and closes them once it has started."""
    cleanup: Callable[[], None] | None = None
    """Call this once the job has ended, however it ended (kills what is left in its cgroup and
    removes the cgroup)."""


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
    etc_dir.mkdir(parents=True, exist_ok=True)  # host-path: the state dir's, no sandbox's
    files = {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"agent:x:{uid}:{gid}:agent:{INSIDE_HOME}:/bin/bash\n",
        "group": f"root:x:0:\nagent:x:{gid}:\n",
    }
    for name, text in files.items():
        path = etc_dir / name
        # host-path: the state dir's sandbox-etc, mounted read-only in jobs, never writable there
        if not path.is_file() or path.read_text() != text:
            safefs.replace(etc_dir, name, text.encode())
    return etc_dir


def sandbox_plan(
    settings: Settings,
    workspace: Path,
    cwd: Path,
    snapshot: Snapshot | None,
    world_size: int,
    etc_dir: Path,
    resources: Resources | None = None,
    evaluation: Evaluation | None = None,
) -> dict[str, Any]:
    """The part of the job's sandbox the broker decides; stored in ``task.json`` as ``sandbox``.
    ``resources``: what the request asked for, which a Docker job's container is limited to (the
    Docker daemon is not inside the job's Slurm cgroup, so Slurm's limits do not reach it).
    ``evaluation``: the pristine copy of the protected paths, which the job sees at those paths
    instead of the workspace's (see :func:`_evaluation_mounts`)."""
    from framework.sandbox.bwrap import BwrapRuntime
    from framework.sandbox.spec import BindMount, SandboxSpec

    runtime: JobRuntime = settings.cluster.job_runtime

    source = snapshot.root if snapshot is not None else workspace
    mounts = [BindMount(source=source, target=workspace, read_only=True)]
    checked = [str(workspace)]
    protected = evaluation.protected if evaluation is not None else ()
    for relative in snapshot.ignored if snapshot is not None else []:
        if any(relative == p or relative.startswith(p + "/") for p in protected):
            continue  # the pristine copy is mounted there instead
        live = workspace / relative
        mounts.append(BindMount(source=live, target=live, read_only=True))
        checked.append(str(live))
    if evaluation is not None:
        mounts += _evaluation_mounts(evaluation, workspace, snapshot)
    for mount in settings.sandbox.mounts:
        target = mount.target or mount.source
        mounts.append(BindMount(source=mount.source, target=target, read_only=mount.read_only))
    if runtime == "docker":
        from framework.sandbox.launch import sandbox_ids as container_ids

        uid, gid = container_ids("docker", workspace)  # as a Docker session would run
    else:
        uid, gid = sandbox_ids()
    network = job_network(settings, world_size)
    if network == "private" and runtime == "docker":
        raise JobSandboxError(
            f"a job of {world_size} tasks needs a network of its own between its ranks, which "
            "Docker jobs do not have yet (only bwrap jobs do, see docs/security.md); set "
            "cluster.job_runtime = 'bwrap' for multi-task jobs"
        )
    spec = SandboxSpec(
        argv=[ARGV_PLACEHOLDER],
        image=settings.sandbox.image if runtime == "docker" else None,
        workdir=cwd,
        mounts=sorted(mounts, key=lambda m: len(m.target.parts)),
        uid=uid,
        gid=gid,
        home=Path(INSIDE_HOME),
        # "private": the template has no network (--unshare-net); the runner swaps that for the
        # job's own link between its ranks (see _private_network).
        network="open" if network == "open" else "none",
        hostname=socket.gethostname()[:63] or "node",
    )
    limits = job_limits(settings, resources)
    plan: dict[str, Any] = {
        "limits": limits._asdict(),
        "runtime": runtime,
        "checked_paths": checked,
        "workspace": str(workspace),
        "snapshot": str(snapshot.root) if snapshot is not None else None,
        "network": network,
    }
    if runtime == "docker":
        from framework.sandbox.launch import SANDBOX_PATH

        return {
            **plan,
            "template": docker_template(spec, resources, limits),
            "image": spec.image,
            "uid": uid,
            "gid": gid,
            "path": SANDBOX_PATH,
        }
    return {**plan, "template": BwrapRuntime().argv(spec, None, etc_dir)}


class JobLimits(NamedTuple):
    """What one task of a job may use: its cgroup (bwrap jobs) or its container's limits."""

    pids: int
    memory_bytes: int | None
    cpus: float


def job_limits(settings: Settings, resources: Resources | None) -> JobLimits:
    """The request's CPUs per task and its memory per node shared by the node's tasks, else the
    defaults of ``cluster``; processes always from ``cluster.job_pids``."""
    cluster = settings.cluster
    cpus = float(resources.cpus if resources is not None else cluster.cpus_per_task)
    memory_gb = cluster.job_memory_gb
    if resources is not None and resources.mem_gb is not None:
        memory_gb = resources.mem_gb / resources.tasks_per_node
    memory = None if memory_gb is None else max(MIN_JOB_MEMORY, int(memory_gb * 2**30))
    return JobLimits(pids=cluster.job_pids, memory_bytes=memory, cpus=cpus)


def job_network(settings: Settings, world_size: int) -> JobNetwork:
    """A single-task job gets loopback only; the ranks of a multi-task job a link of their own
    (jobnet.py) that reaches each other and nothing else. The node's network only in an ``open``
    session: a job never gets more than the session that submitted it."""
    if world_size > 1 and settings.sandbox.network == "open":
        return "open"
    return "none" if world_size == 1 else "private"


def _evaluation_mounts(
    evaluation: Evaluation, workspace: Path, snapshot: Snapshot | None
) -> list[BindMount]:
    """The pristine copy of each protected path, read-only over the job's view of the workspace,
    and an empty read-only placeholder over one that was absent at launch but exists now: what
    the agent wrote there is never the job's judge.

    A mount needs its mount point: in the snapshot (the host's own copy) it is created when
    missing; in the live workspace (no snapshot, or under a git-ignored directory) it must exist,
    as nothing is created there. A snapshot holds no ``.git``, so a job sees none of it."""
    from framework.sandbox.spec import BindMount

    mounts: list[BindMount] = []
    ignored = snapshot.ignored if snapshot is not None else []
    for name in evaluation.protected:
        if snapshot is not None and (name == ".git" or name.startswith(".git/")):
            continue
        live = snapshot is None or any(name.startswith(i + "/") for i in ignored)
        base = workspace if live or snapshot is None else snapshot.root
        try:
            there = safefs.stat_beneath(base, name)
        except (safefs.UnsafePath, NotADirectoryError):
            _refuse_protected(name, "is reached through a symbolic link or a file")
        if there is not None and not (stat.S_ISDIR(there.st_mode) or stat.S_ISREG(there.st_mode)):
            _refuse_protected(name, "is a symbolic link or a special file")
        entry = evaluation.entries[name]
        if entry.kind == "absent":
            if there is None:
                continue
            source = evaluation.placeholder(directory=stat.S_ISDIR(there.st_mode))
        else:
            source = evaluation.source(name)
            if there is None and (live or snapshot is None):
                _refuse_protected(name, "is missing, but the session's evaluation has it")
            elif there is None and snapshot is not None:
                _mount_point(snapshot.root, name, directory=entry.kind == "dir")
            elif there is not None and stat.S_ISDIR(there.st_mode) != (entry.kind == "dir"):
                _refuse_protected(name, f"is no longer a {entry.kind}")
        mounts.append(BindMount(source=source, target=workspace / name, read_only=True))
    return mounts


def _refuse_protected(name: str, why: str) -> NoReturn:
    raise JobSandboxError(
        f"protected path {name!r} of the workspace {why}, so the job cannot be given the "
        "session's pristine copy of the evaluation there. Restore it (the copy is under "
        "<state dir>/evaluation/) and submit again"
    )


def _mount_point(root: Path, name: str, directory: bool) -> None:
    """An empty directory or file at ``name`` in the snapshot copy (host-owned), created without
    following a link the copy may hold."""
    if directory:
        with safefs.open_dir(root, name, create=True):
            return
    safefs.write_new(root, name, b"", create_dirs=True)


def docker_template(
    spec: SandboxSpec, resources: Resources | None = None, limits: JobLimits | None = None
) -> list[str]:
    """``docker run`` for a job, with the isolation of a Docker session (framework.sandbox.docker):
    all capabilities dropped but the three the image's entrypoint needs to become ``spec.uid`` for
    good, no-new-privileges, an init, a private IPC namespace, a process limit, no network (or the
    host's for multi-task jobs), no Docker socket, nothing of the host home. The command line names
    variables (``--env NAME``); their values travel in the client's environment, never in argv."""
    from framework.sandbox.docker import ENTRYPOINT_CAPS

    assert spec.image is not None
    args = ["docker", "run", "--rm", "--init", "--cap-drop=ALL"]
    args += [f"--cap-add={cap}" for cap in ENTRYPOINT_CAPS]
    args += ["--security-opt=no-new-privileges", "--ipc=private", f"--hostname={spec.hostname}"]
    args += ["--network=host" if spec.network == "open" else "--network=none"]
    if limits is not None:
        # One container per task: the CPUs asked per task, the node's memory shared by its tasks.
        args += [f"--pids-limit={limits.pids}", f"--cpus={limits.cpus:g}"]
        if limits.memory_bytes is not None:
            mib = limits.memory_bytes >> 20
            args += [f"--memory={mib}m", f"--memory-swap={mib}m"]
    elif spec.resources.pids is not None:
        args.append(f"--pids-limit={spec.resources.pids}")
    for tmpfs in ("/tmp", str(spec.home)):
        args.append(f"--tmpfs={tmpfs}:rw,nosuid,nodev,mode=1777")
    args += [f"--workdir={spec.workdir}", "--label=agentic-researcher=1"]
    for mount in spec.mounts:
        args.append(docker_bind(str(mount.source), str(mount.target), mount.read_only))
    args += ["--env=AR_UID", "--env=AR_GID", spec.image, *spec.argv]
    return args


def docker_bind(source: str, target: str, read_only: bool) -> str:
    """One ``--mount`` option. Docker reads its value as a CSV record: a path holding a comma or a
    quote is quoted, so it cannot add options of its own (``,readonly=false``)."""

    def field(text: str) -> str:
        if not any(c in text for c in ',"\r\n'):
            return text
        return '"' + text.replace('"', '""') + '"'

    fields = ["type=bind", field(f"src={source}"), field(f"dst={target}")]
    return "--mount=" + ",".join(fields + (["readonly"] if read_only else []))


class _Checked(NamedTuple):
    path: str
    fd: int
    """An ``O_PATH`` descriptor of what was checked: what bwrap mounts, what Docker's mount must be."""


def _open_checked(plan: Mapping[str, Any]) -> list[_Checked]:
    """Each mounted path of the workspace opened once, through no link (a link anywhere from
    the workspace root down refuses the job). The caller closes the descriptors."""
    workspace = Path(plan["workspace"])
    opened: list[_Checked] = []
    try:
        for checked in plan["checked_paths"]:
            path = Path(checked)
            relative = "" if path == workspace else path.relative_to(workspace).as_posix()
            opened.append(_Checked(checked, safefs.open_path(workspace, relative)))
    except (OSError, ValueError) as exc:
        for item in opened:
            os.close(item.fd)
        raise JobSandboxError(
            f"{exc}: jobs never mount links or special files from the workspace. Replace it "
            "with the real directory (or file) and resubmit"
        ) from exc
    return opened


def _bind_by_descriptor(template: list[str], opened: list[_Checked]) -> list[str]:
    """``--ro-bind NAME DEST`` becomes ``--ro-bind-fd FD DEST`` for every checked name."""
    fds = {item.path: item.fd for item in opened}
    out: list[str] = []
    i = 0
    while i < len(template):
        flag = template[i]
        if flag in ("--ro-bind", "--bind") and i + 2 < len(template) and template[i + 1] in fds:
            out += [f"{flag}-fd", str(fds[template[i + 1]]), template[i + 2]]
            i += 3
            continue
        out.append(flag)
        i += 1
    return out


MOUNT_CHECK = (
    'while [ "$1" != -- ]; do '
    'got=$(stat -c %d:%i -- "$1") || exit 126; '
    'if [ "$got" != "$2" ]; then '
    'echo "remote-run: $1 is not the directory the runner checked (swapped since): refused" >&2; '
    'exit 126; fi; shift 2; done; shift; exec "$@"'
)
"""The Docker job's first step: each checked mount is the object the runner opened, by device
and inode (a bind mount shows its source's), or the job ends before any of its code runs."""


def _docker_mount_check(plan: Mapping[str, Any], opened: list[_Checked]) -> list[str]:
    pairs: list[str] = []
    for item in opened:
        if item.path == plan["workspace"] and plan.get("snapshot") is not None:
            continue  # the snapshot (the host's copy) is mounted there, not this directory
        info = os.fstat(item.fd)
        pairs += [item.path, f"{info.st_dev}:{info.st_ino}"]
    return ["/bin/sh", "-c", MOUNT_CHECK, "ar-mount-check", *pairs, "--"] if pairs else []


def wrap_in_sandbox(argv: list[str], env: Mapping[str, str], task: Mapping[str, Any]) -> WrappedJob:
    """The runner's side: the sandbox's command line for this rank on this node."""
    plan = task["sandbox"]
    runtime = plan.get("runtime", "bwrap")
    binary = shutil.which(runtime)
    if binary is None:
        other = "docker" if runtime == "bwrap" else "bwrap"
        raise JobSandboxError(
            f"jobs run sandboxed in {runtime} (cluster.job_sandbox = 'required', "
            f"cluster.job_runtime = '{runtime}') but {runtime} is not installed on node "
            f"{socket.gethostname()}: install {'bubblewrap' if runtime == 'bwrap' else 'docker'} "
            f"there, set cluster.job_runtime = '{other}', or set cluster.job_sandbox = 'off' to "
            "run jobs unsandboxed"
        )
    opened = _open_checked(plan)
    if runtime == "docker":
        try:
            return _wrap_in_docker(binary, argv, env, task, _docker_mount_check(plan, opened))
        finally:
            for item in opened:
                os.close(item.fd)
    try:
        return _wrap_in_bwrap(binary, argv, env, task, opened)
    except BaseException:
        for item in opened:
            os.close(item.fd)
        raise


def _wrap_in_bwrap(
    binary: str,
    argv: list[str],
    env: Mapping[str, str],
    task: Mapping[str, Any],
    opened: list[_Checked],
) -> WrappedJob:
    plan = task["sandbox"]
    template = _bind_by_descriptor(list(plan["template"]), opened)
    outside_env = {"PATH": "/usr/bin:/bin"}
    prefix: list[str] = []
    link_env: dict[str, str] = {}
    if plan["network"] == "private":
        descriptors = [item.fd for item in opened]
        template, prefix, link_env, key = _private_network(template, env, task, descriptors)
        outside_env[KEY_VARIABLE] = key
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
    inside_env.update(link_env)
    setenv: list[str] = []
    for name, value in sorted(inside_env.items()):
        setenv += ["--setenv", name, value]
    placeholder = template.index(ARGV_PLACEHOLDER)
    wrapped = [
        *prefix,
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
        "runtime": "bwrap",
        "network": plan["network"],
        "snapshot": plan["snapshot"],
        "gpu_device_nodes": gpu_nodes,
    }
    cgroup, limits_info = _job_cgroup(plan.get("limits"), str(task.get("run_id", "job")))
    info["limits"] = limits_info
    cleanup = None
    if cgroup is not None:
        wrapped = cgroup.enter_argv() + wrapped

        def cleanup() -> None:
            cgroup.kill_all()
            cgroup.remove()

    # bwrap stays in the sandbox as PID 1, whose environment is readable there: give it nothing
    # (the relay takes the job's key out of its own environment before starting bwrap).
    fds = tuple(item.fd for item in opened)
    return WrappedJob(wrapped, outside_env, run_dir, info, pass_fds=fds, cleanup=cleanup)


def _job_cgroup(
    limits: Mapping[str, Any] | None, run_id: str
) -> tuple[SessionCgroup | None, dict[str, Any]]:
    """A cgroup for this rank holding every process of its sandbox (pids, memory, CPUs), and
    what ``started.<rank>.json`` says of it. Without a writable cgroup tree (an unprivileged
    runner on a node that delegates none) the job still runs, under the executor's own limits
    (Slurm's cgroup, where the cluster has one), and the record says so."""
    from framework.sandbox.cgroups import CgroupUnavailable, SessionCgroup

    if not limits:
        return None, {"cgroup": None, "why": "submitted without limits (an older broker)"}
    wanted = JobLimits(int(limits["pids"]), limits.get("memory_bytes"), float(limits["cpus"]))
    try:
        cgroup = SessionCgroup.create(wanted, prefix=f"ar-job-{run_id}"[:60])
    except CgroupUnavailable as exc:
        return None, {**wanted._asdict(), "cgroup": None, "why": str(exc)}
    return cgroup, {**wanted._asdict(), "cgroup": cgroup.version}


def _private_network(
    template: list[str], env: Mapping[str, str], task: Mapping[str, Any], fds: list[int]
) -> tuple[list[str], list[str], dict[str, str], str]:
    """The rank's part of the job's own link (jobnet.py): the template without ``--unshare-net``
    (bwrap then stays in the relay's network namespace), the relay's command line, what the job
    sees (``MASTER_ADDR`` becomes rank 0's address on the link) and the job's key. The relay's hub
    listens where the job would otherwise have met: the node's master address and port."""
    key = task.get("jobnet_key")
    if not key:
        raise JobSandboxError(
            "this multi-task job has no network key in its submission (submitted by an older "
            "broker?); submit it again"
        )
    separator = template.index("--")
    if "--unshare-net" not in template[:separator]:
        raise JobSandboxError("the sandbox template of a private-network job has a network")
    at = template.index("--unshare-net")
    template = template[:at] + template[at + 1 :]
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    hub = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
    relay = [sys.executable, "-I", "-S", str(Path(__file__).with_name("jobnet.py"))]
    relay += ["--rank", str(rank), "--world", str(world), "--hub", hub]
    for fd in fds:  # the checked mounts bwrap binds by descriptor: the relay hands them on
        relay += ["--pass-fd", str(fd)]
    relay.append("--")
    link_env = {
        "MASTER_ADDR": rank_address(0),
        "AR_RANK_ADDR": rank_address(rank),
        # gloo and NCCL pick the interface they listen on; only the link reaches the other ranks.
        "GLOO_SOCKET_IFNAME": IFNAME,
        "NCCL_SOCKET_IFNAME": IFNAME,
    }
    return template, relay, link_env, str(key)


def _wrap_in_docker(
    binary: str,
    argv: list[str],
    env: Mapping[str, str],
    task: Mapping[str, Any],
    check: list[str],
) -> WrappedJob:
    """``docker run`` for this rank: the run directory, its GPUs and its environment added."""
    plan = task["sandbox"]
    template: list[str] = list(plan["template"])
    placeholder = template.index(ARGV_PLACEHOLDER)  # [..., image, placeholder]
    run_dir = str(task["run_dir"])
    uid, gid = int(plan["uid"]), int(plan["gid"])
    if os.getuid() == 0:  # the job writes its run dir as uid, which containers do not remap
        # By descriptor, never through a link: a rank's job may have put one at artifacts/.
        for relative in ("", "artifacts"):
            safefs.chown_entry(Path(run_dir), relative, uid, gid)
    name = f"ar-{task['run_id']}-{env.get('RANK', '0')}"
    node_specific = [
        f"--name={name}",
        f"--label=agentic-researcher.run={task['run_id']}",
        docker_bind(run_dir, run_dir, read_only=False),
    ]
    inside_env = {
        **env,
        "HOME": INSIDE_HOME,
        "USER": "agent",
        "LOGNAME": "agent",
        "TMPDIR": "/tmp",
        "PATH": str(plan["path"]),
    }
    gpus = _node_gpu_ids(env)
    if gpus and nvidia_present():
        node_specific.append(f'--gpus="device={",".join(gpus)}"')
        # The container sees only these GPUs, numbered from 0.
        inside_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(gpus)))
    else:
        gpus = []
    node_specific += [f"--env={variable}" for variable in sorted(inside_env)]
    wrapped = [binary, *template[1 : placeholder - 1], *node_specific, template[placeholder - 1]]
    wrapped += [*check, *argv, *template[placeholder + 1 :]]
    client_env = {**inside_env, "AR_UID": str(uid), "AR_GID": str(gid)}
    for variable in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG"):
        if variable in os.environ:
            client_env[variable] = os.environ[variable]
    info = {
        "runtime": "docker",
        "image": plan["image"],
        "container": name,
        "network": plan["network"],
        "snapshot": plan["snapshot"],
        "gpus": gpus,
    }
    stop = [binary, "rm", "--force", name]
    return WrappedJob(wrapped, client_env, run_dir, info, stop)


def _node_gpu_ids(env: Mapping[str, str]) -> list[str]:
    """Host GPU ids of this rank: Slurm's own list (CUDA_VISIBLE_DEVICES may be renumbered inside
    the job's cgroup, which the Docker daemon is not in), else CUDA_VISIBLE_DEVICES."""
    for variable in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = env.get(variable) or os.environ.get(variable)
        if value:
            return [part for part in value.split(",") if part]
    return []


def nvidia_present() -> bool:
    from framework.sandbox.gpu import nvidia_device_nodes

    return bool(nvidia_device_nodes()[0])
