"""Dispatch benchmarks: submit-to-result latency through the broker vs plain submitit, what a script
experiences (`remote-run --wait -- true` as a process), and the time to submit a 1,000-task array.
Jobs run sandboxed (bwrap, the default) unless `--job-sandbox off`. Slurm rows run when the test
cluster answers (`scontrol ping`).

    python -m tests.bench.dispatch [--repeats 5] [--no-slurm] [--job-sandbox required|off]

Prints a JSON object (with the load average before and after) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framework.config import load_settings
from framework.dispatch.broker import start_broker
from framework.dispatch.client import call
from framework.dispatch.jobsandbox import JobSandboxMode


def trivial_job() -> int:
    return subprocess.run(["true"], check=False).returncode


ARRAY_REPEATS = 5


def median_of(repeats: int, fn: Callable[[], object]) -> dict[str, Any]:
    """Median, min and max of ``repeats`` timed calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summary(times)


def make_workspace(workspace: Path) -> None:
    """A small research repo: a few committed files, one uncommitted edit, one untracked file."""
    workspace.mkdir()
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    for i in range(20):
        (workspace / f"module_{i}.py").write_text(f"VALUE = {i}\n" * 50)
    git = ["git", "-C", str(workspace), "-c", "user.email=b@b", "-c", "user.name=b"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], check=True)
    (workspace / "module_0.py").write_text("VALUE = -1\n")
    (workspace / "new_experiment.py").write_text("print('new')\n")


def through_broker(
    executor: str, root: Path, repeats: int, array: int, job_sandbox: str
) -> dict[str, Any]:
    workspace = root / f"ws-{executor}"
    make_workspace(workspace)
    flags = {
        "state_dir": str(root / f"state-{executor}"),
        "cluster": {"executor": executor, "max_array": array},
    }
    settings = load_settings(workspace=workspace, flags=flags, environ={"HOME": str(root)}).settings
    mode: JobSandboxMode = "off" if job_sandbox == "off" else "required"
    handle = start_broker(workspace, settings, None, job_sandbox=mode)
    sock = handle.env["REMOTE_RUN_SOCKET"]
    try:

        def one() -> None:
            answer = call(
                {"op": "submit", "request": {"argv": ["true"], "cwd": str(workspace)}}, sock
            )
            (run,) = call({"op": "wait", "run": answer["group"], "timeout_s": 120}, sock)["runs"]
            assert run["state"] == "finished", run

        one()  # warm-up
        latency = median_of(repeats, one)
        array_s = array_submissions(executor, root, workspace, sock, array)

        # As inside the sandbox: the installed script through its shebang, the system python3.
        env = {"REMOTE_RUN_SOCKET": sock, "PATH": "/usr/bin:/bin"}
        ping = [str(handle.client_path), "ping"]
        client_s = median_of(
            repeats, lambda: subprocess.run(ping, env=env, capture_output=True, check=True)
        )
        script = [str(handle.client_path), "--wait", "--", "true"]
        end_to_end = median_of(
            repeats,
            lambda: subprocess.run(script, cwd=workspace, env=env, capture_output=True, check=True),
        )
    finally:
        handle.stop()
    return {
        "latency": latency,
        **array_s,
        "client_process_ping": client_s,
        "remote_run_wait_true": end_to_end,
    }


def plain_submitit(executor: str, root: Path, repeats: int) -> dict[str, Any]:
    import submitit

    folder = root / f"submitit-{executor}" / "%j"
    ex: Any = (
        submitit.LocalExecutor(folder=folder)
        if executor == "local"
        else submitit.SlurmExecutor(folder=folder)
    )
    if executor == "local":
        ex.update_parameters(timeout_min=5)
    else:
        ex.update_parameters(time=5)

    def one() -> None:
        assert ex.submit(trivial_job).result() == 0

    one()
    return {"latency": median_of(repeats, one)}


def array_submissions(
    executor: str, root: Path, workspace: Path, sock: str, array: int
) -> dict[str, Any]:
    """The time to submit an array through the broker and, on Slurm, with plain submitit's
    ``map_array``, the two alternating (this machine's load drifts within minutes; side by side,
    both see the same). Each array is cancelled, and left to settle, untimed before the next
    submission."""
    import submitit

    request = {"argv": ["true"], "cwd": str(workspace), "array": list(range(array))}
    plain: Any = None
    if executor == "slurm":
        plain = submitit.SlurmExecutor(folder=root / "submitit-array" / "%j")
        plain.update_parameters(time=5, array_parallelism=array)
    broker_times: list[float] = []
    plain_times: list[float] = []
    for _ in range(ARRAY_REPEATS):
        start = time.perf_counter()
        group = call({"op": "submit", "request": request}, sock)["group"]
        broker_times.append(time.perf_counter() - start)
        call({"op": "cancel", "run": group}, sock)
        call({"op": "wait", "run": group, "timeout_s": 120}, sock)
        if plain is not None:
            start = time.perf_counter()
            jobs = plain.map_array(trivial_job_indexed, list(range(array)))
            plain_times.append(time.perf_counter() - start)
            array_id = str(jobs[0].job_id).split("_")[0]
            subprocess.run(["scancel", array_id], check=False)
            settled(array_id)  # as the broker's wait does: the next submission starts unhindered
    result: dict[str, Any] = {"array_submit": summary(broker_times)}
    if plain_times:
        result["plain_map_array"] = summary(plain_times)
        result["array_ratio_of_medians"] = round(
            statistics.median(broker_times) / statistics.median(plain_times), 2
        )
    return result


def settled(job_id: str, timeout_s: float = 120) -> None:
    """Wait until squeue no longer lists any task of ``job_id``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
        if not queue.stdout.strip():
            return
        time.sleep(0.2)


def summary(times: list[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "all_s": [round(t, 3) for t in times],
    }


def trivial_job_indexed(_: int) -> int:
    return trivial_job()


def slurm_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True, check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--array", type=int, default=1000)
    parser.add_argument("--no-slurm", action="store_true")
    parser.add_argument("--job-sandbox", choices=["required", "off"], default="required")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "job_sandbox": args.job_sandbox,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    executors = ["local"] + (["slurm"] if slurm_up() and not args.no_slurm else [])
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        root = Path(tmp)
        for executor in executors:
            results[executor] = {
                "broker": through_broker(
                    executor, root, args.repeats, args.array, args.job_sandbox
                ),
                "plain_submitit": plain_submitit(executor, root, args.repeats),
            }
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))
    print(
        f"\njobs sandboxed: {args.job_sandbox}; medians of {args.repeats} single jobs and "
        f"{ARRAY_REPEATS} arrays; load average before/after: "
        f"{results['load_average_before']} / {results['load_average_after']}\n"
    )
    print(
        "| executor | broker submit-to-result | `remote-run --wait -- true` (process) "
        "| plain submitit | 1,000-task array: broker | plain submitit `map_array` | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for executor in executors:
        row = results[executor]
        broker, plain = row["broker"], row["plain_submitit"]
        print(
            f"| {executor} | {broker['latency']['median_s']} s "
            f"| {broker['remote_run_wait_true']['median_s']} s "
            f"| {plain['latency']['median_s']} s | {broker['array_submit']['median_s']} s "
            f"| {broker['plain_map_array']['median_s'] if 'plain_map_array' in broker else 'n/a'} "
            f"| {broker.get('array_ratio_of_medians', 'n/a')} |"
        )


if __name__ == "__main__":
    main()
