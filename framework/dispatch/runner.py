"""Runs one rank of one run on the node: argv without a shell, a clean environment, logs in the run dir.

Started as ``python -m framework.dispatch.runner RUN_DIR`` by the local scheduler (in its own session,
so it survives a broker restart) once the broker has made the run dir (:func:`prepare_run_dir`), or
called as :func:`slurm_entry` by submitit on a Slurm node, which makes the run dir itself from the
submission's file. It runs ``task.json``, writes ``started.<rank>.json`` when the process starts
and ``exit.<rank>.json`` when it ends; the broker turns those into ledger events. Stdlib only: it
runs in whatever Python the node has, importing nothing heavy.

The run directory is the job's to write (and, in a multi-task run, other ranks' jobs write it
while this rank starts): every access to a name in it goes through :mod:`framework.safefs`, so a
link planted there is refused or replaced, never followed with the runner's privileges.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from framework import safefs

TASK_FILE = "task.json"
MAX_TASK_BYTES = 16 << 20
PASSED_THROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME", "HOME", "TMPDIR")
"""With the SLURM_* allocation variables, the only host variables a job inherits: host secrets (API
keys, tokens) never reach agent code."""

if TYPE_CHECKING:
    from framework.dispatch.jobsandbox import WrappedJob

ArgvWrapper = Callable[[list[str], Mapping[str, str], Mapping[str, Any]], "WrappedJob"]
"""Hook for running the job inside a sandbox on the node: (argv, job env, task) -> what to start.
Tasks with a ``sandbox`` plan use :func:`framework.dispatch.jobsandbox.wrap_in_sandbox`."""


def log_name(stream: str, rank: int) -> str:
    return f"{stream}.log" if rank == 0 else f"{stream}.{rank}.log"


def write_json_atomic(path: Path, data: object, fsync: bool = True) -> None:
    """Readers see the old or the new file, never half of one. ``fsync`` adds machine-crash
    durability; a killed process loses nothing already replaced either way. The directory may be
    a run dir the job writes: the temporary file's name is unpredictable and a link at ``path``
    is replaced, never followed (safefs)."""
    # json.dumps, not json.dump to a file: the latter uses the slow pure-Python encoder.
    safefs.replace(path.parent, path.name, json.dumps(data).encode(), fsync=fsync)


def master_port(run_id: str) -> int:
    return 20000 + int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % 20000


def task_of(
    submission: Mapping[str, Any], position: int, devices: list[str] | None
) -> dict[str, Any]:
    """What one run executes, from its submission's file (see the broker's ``_submission``)."""
    record, run = submission["record"], submission["runs"][position]
    run_id = run["run_id"]
    return {
        "run_id": run_id,
        "run_dir": os.path.join(submission["runs_dir"], run_id),
        "argv": run["argv"],
        "cwd": record["cwd"],
        "env": record["env"],
        "array_index": run["array_index"],
        "master_port": master_port(run_id),
        "devices": devices,
        "time_limit_s": submission["time_limit_s"],
        "sandbox": submission["sandbox"],
    }


def prepare_run_dir(
    submission: Mapping[str, Any], position: int, devices: list[str] | None = None
) -> dict[str, Any]:
    """Create the run's directory when the run starts (not at submit: an array of 1,000 costs the
    broker one file, and the nodes make their own directories) with ``task.json`` (a copy for the
    reader; the runner runs the task it is handed). The submission's diff stays where the broker
    stored it, once for all its runs (``dispatch/groups/<group>.diff``, out of the jobs' reach):
    a copy per run made an array of 20 runs of a 20 MiB diff cost 400 MiB. Every rank of a
    multi-task run may call it at once."""
    task = task_of(submission, position, devices)
    run_dir = Path(task["run_dir"])
    # The runs dir is the host's; the run dir may already be written by another rank's job.
    run_dir.parent.mkdir(parents=True, exist_ok=True)  # host-path: the state dir's runs/
    os.close(safefs.open_directory(run_dir.parent, f"{run_dir.name}/artifacts", create=True))
    write_json_atomic(run_dir / TASK_FILE, task, fsync=False)
    return task


def job_environment(
    task: Mapping[str, Any], rank: int, local_rank: int, world_size: int, master_addr: str
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in PASSED_THROUGH_ENV or k.startswith(("SLURM_", "SLURMD_"))
    }
    env.update(task.get("env", {}))
    env.update(
        {
            "RUN_ID": task["run_id"],
            "RUN_DIR": task["run_dir"],
            "METRICS_FILE": str(Path(task["run_dir"]) / "metrics.json"),
            "ARTIFACTS_DIR": str(Path(task["run_dir"]) / "artifacts"),
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": str(task["master_port"]),
            "WORLD_SIZE": str(world_size),
            "RANK": str(rank),
            "LOCAL_RANK": str(local_rank),
            "PYTHONUNBUFFERED": env.get("PYTHONUNBUFFERED", "1"),
        }
    )
    if task.get("array_index") is not None:
        env["ARRAY_INDEX"] = str(task["array_index"])
    devices = task.get("devices")
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    elif "CUDA_VISIBLE_DEVICES" in os.environ:  # set by Slurm for a GPU allocation
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def run_rank(
    run_dir: Path,
    rank: int = 0,
    local_rank: int = 0,
    world_size: int = 1,
    master_addr: str = "127.0.0.1",
    wrap: ArgvWrapper | None = None,
    task: Mapping[str, Any] | None = None,
) -> int:
    """Execute the task's argv for one rank; return its exit code (negative: killed by a signal).

    ``task`` None: read it from the run dir's ``task.json`` (the local runner, which starts before
    the job can write there; a Slurm rank is handed its task, as another rank's job may already
    have rewritten the file)."""
    if task is None:
        task = json.loads(safefs.read_text(run_dir, TASK_FILE, limit=MAX_TASK_BYTES))
    env = job_environment(task, rank, local_rank, world_size, master_addr)
    argv = list(task["argv"])
    host = socket.gethostname()
    started: dict[str, Any] = {
        "rank": rank,
        "host": os.environ.get("SLURMD_NODENAME", host),
        "pid": os.getpid(),
        "time": time.time(),
    }
    started["devices"] = env.get("CUDA_VISIBLE_DEVICES")
    outcome: dict[str, Any] = {"rank": rank, "host": started["host"]}
    popen_env, cwd = env, task["cwd"]
    stop: list[str] | None = None
    cleanup: Callable[[], None] | None = None
    if wrap is None and task.get("sandbox"):
        from framework.dispatch.jobsandbox import wrap_in_sandbox

        wrap = wrap_in_sandbox
    try:
        out, err = _open_run_dir(run_dir, rank)
    except OSError as exc:
        # Another rank's job planted a link (or a FIFO) where this rank writes: refuse the rank.
        write_json_atomic(run_dir / f"started.{rank}.json", started)
        outcome.update(code=126, reason=f"unsafe run directory: {exc}", time=time.time())
        write_json_atomic(run_dir / f"exit.{rank}.json", outcome)
        return 126
    pass_fds: tuple[int, ...] = ()
    with out, err, contextlib.ExitStack() as held:
        if wrap is not None:
            try:
                wrapped = wrap(argv, env, task)
            except Exception as exc:  # any failure to sandbox must fail the run, visibly
                reason = f"cannot sandbox the job: {exc}"
                err.write(f"remote-run: {reason}\n".encode())
                write_json_atomic(run_dir / f"started.{rank}.json", started)
                outcome.update(code=126, reason=reason, time=time.time())
                write_json_atomic(run_dir / f"exit.{rank}.json", outcome)
                return 126
            argv, popen_env, cwd, stop = wrapped.argv, wrapped.env, wrapped.cwd, wrapped.stop
            cleanup = wrapped.cleanup
            started["sandbox"] = wrapped.info
            pass_fds = wrapped.pass_fds
            for fd in pass_fds:  # what bwrap mounts; ours to close once it has them
                held.callback(os.close, fd)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=popen_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=pass_fds,
            )
        except OSError as exc:
            if cleanup is not None:
                cleanup()
            err.write(f"remote-run: cannot start {argv[0]!r}: {exc.strerror}\n".encode())
            write_json_atomic(run_dir / f"started.{rank}.json", started)
            outcome.update(
                code=127, reason=f"cannot start {argv[0]!r}: {exc.strerror}", time=time.time()
            )
            write_json_atomic(run_dir / f"exit.{rank}.json", outcome)
            return 127
        started["child_pid"] = proc.pid
        write_json_atomic(run_dir / f"started.{rank}.json", started)
        limit = task.get("time_limit_s")
        previous = _terminate_by_exception() if stop else None
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            code = _kill(proc, stop, popen_env)
            outcome["reason"] = f"time limit exceeded ({limit} s)"
        except BaseException as exc:  # submitit's timeout signal handler raises into this frame
            code = _kill(proc, stop, popen_env)
            text = str(exc)
            outcome["reason"] = (
                "time limit exceeded" if "timed-out" in text else f"interrupted: {text}"
            )
            outcome.update(code=code, time=time.time())
            write_json_atomic(run_dir / f"exit.{rank}.json", outcome)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if cleanup is not None:  # what the job left behind in its cgroup, then the cgroup
                cleanup()
    outcome.update(code=code, time=time.time())
    write_json_atomic(run_dir / f"exit.{rank}.json", outcome)
    return code


def _open_run_dir(run_dir: Path, rank: int) -> tuple[BinaryIO, BinaryIO]:
    """This rank's ``artifacts/`` and log files (appended to: a restarted rank adds to them),
    never through a link: in a multi-task run other ranks' jobs have written here already."""
    os.close(safefs.open_directory(run_dir, "artifacts", create=True))
    out = os.fdopen(safefs.open_append(run_dir, log_name("stdout", rank)), "ab", buffering=0)
    try:
        err = os.fdopen(safefs.open_append(run_dir, log_name("stderr", rank)), "ab", buffering=0)
    except BaseException:
        out.close()
        raise
    return out, err


class Terminated(Exception):
    """SIGTERM (a cancel, or Slurm ending the job) while a container runs: stop it, then end."""


def _terminate_by_exception() -> Any:
    """A container outlives its killed client, so SIGTERM must reach the code that removes it
    (the default action would end the runner on the spot). Main thread only; returns the old
    handler, or None where none can be installed."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminated(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signum}")

    return signal.signal(signal.SIGTERM, terminated)


def _kill(proc: subprocess.Popen[bytes], stop: list[str] | None, env: Mapping[str, str]) -> int:
    """Kill the job's process, and with ``stop`` whatever outlives it; return its exit code."""
    proc.kill()
    code = proc.wait()
    if stop:
        subprocess.run(
            stop, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )
    return code


def slurm_entry(submission_file: str, position: int) -> int:
    """The function submitit runs in every Slurm task: the run is entry ``position`` of the
    submission's file; ranks and master address come from the allocation."""
    import submitit

    submission = json.loads(Path(submission_file).read_text())  # host-path: the broker's own file
    task = prepare_run_dir(submission, position)
    if submission.get("jobnet_key"):
        # Handed over in memory only: task.json in the run dir is the job's to read.
        task = {**task, "jobnet_key": submission["jobnet_key"]}
    job_env = submitit.JobEnvironment()
    master = job_env.hostnames[0] if job_env.hostnames else "127.0.0.1"
    try:
        master_addr = socket.gethostbyname(master)
    except OSError:
        master_addr = master
    return run_rank(
        Path(task["run_dir"]),
        rank=job_env.global_rank,
        local_rank=job_env.local_rank,
        world_size=job_env.num_tasks,
        master_addr=master_addr,
        task=task,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m framework.dispatch.runner RUN_DIR", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return run_rank(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
