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


ARRAY_REPEATS = 3


def median_of(
    repeats: int, fn: Callable[[], object], after: Callable[[], object] | None = None
) -> dict[str, float]:
    """Median, min and max of ``repeats`` timed calls; ``after`` runs untimed after each."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if after is not None:
            after()
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
    }


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
        request = {"argv": ["true"], "cwd": str(workspace), "array": list(range(array))}

        def submit_array() -> None:
            answer = call({"op": "submit", "request": request}, sock)
            groups.append(answer["group"])

        def cancel(group: str) -> None:
            call({"op": "cancel", "run": group}, sock)
            call({"op": "wait", "run": group, "timeout_s": 120}, sock)

        groups: list[str] = []
        array_s = median_of(ARRAY_REPEATS, submit_array, after=lambda: cancel(groups[-1]))

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
        "array_submit": array_s,
        "client_process_ping": client_s,
        "remote_run_wait_true": end_to_end,
    }


def plain_submitit(executor: str, root: Path, repeats: int, array: int) -> dict[str, Any]:
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
        ex.update_parameters(time=5, array_parallelism=array)

    def one() -> None:
        assert ex.submit(trivial_job).result() == 0

    one()
    latency = median_of(repeats, one)
    result: dict[str, Any] = {"latency": latency}
    if executor == "slurm":
        submitted: list[Any] = []
        result["array_submit"] = median_of(
            ARRAY_REPEATS,
            lambda: submitted.append(ex.map_array(trivial_job_indexed, list(range(array)))),
            after=lambda: subprocess.run(
                ["scancel", str(submitted[-1][0].job_id).split("_")[0]], check=False
            ),
        )
    return result


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
                "plain_submitit": plain_submitit(executor, root, args.repeats, args.array),
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
        "| plain submitit | 1,000-task array: broker | plain submitit `map_array` |"
    )
    print("|---|---|---|---|---|---|")
    for executor in executors:
        row = results[executor]
        broker, plain = row["broker"], row["plain_submitit"]
        print(
            f"| {executor} | {broker['latency']['median_s']} s "
            f"| {broker['remote_run_wait_true']['median_s']} s "
            f"| {plain['latency']['median_s']} s | {broker['array_submit']['median_s']} s "
            f"| {plain['array_submit']['median_s'] if 'array_submit' in plain else 'n/a'} |"
        )


if __name__ == "__main__":
    main()
