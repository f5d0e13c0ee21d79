"""Dispatch benchmarks: submit-to-result latency through the broker vs plain submitit, and the time to
submit a 1,000-task array. Slurm rows run when the test cluster answers (`scontrol ping`).

    python -m tests.bench.dispatch [--repeats 5] [--no-slurm]

Prints a JSON object and a markdown table. The broker is timed through its real socket (the client
library in-process, so the client's own interpreter start-up is not counted; it is reported apart).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framework.config import load_settings
from framework.dispatch.broker import start_broker
from framework.dispatch.client import call


def trivial_job() -> int:
    return subprocess.run(["true"], check=False).returncode


def median_of(repeats: int, fn: Callable[[], object]) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
    }


def through_broker(executor: str, root: Path, repeats: int, array: int) -> dict[str, Any]:
    workspace = root / f"ws-{executor}"
    workspace.mkdir()
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    flags = {
        "state_dir": str(root / f"state-{executor}"),
        "cluster": {"executor": executor, "max_array": array},
    }
    settings = load_settings(workspace=workspace, flags=flags, environ={"HOME": str(root)}).settings
    handle = start_broker(workspace, settings, None)
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
        start = time.perf_counter()
        request = {"argv": ["true"], "cwd": str(workspace), "array": list(range(array))}
        answer = call({"op": "submit", "request": request}, sock)
        array_s = time.perf_counter() - start
        call({"op": "cancel", "run": answer["group"]}, sock)
        client = [sys.executable, str(handle.client_path), "ping"]
        env = {"REMOTE_RUN_SOCKET": sock, "PATH": "/usr/bin:/bin"}
        client_s = median_of(
            repeats, lambda: subprocess.run(client, env=env, capture_output=True, check=True)
        )
    finally:
        handle.stop()
    return {
        "latency": latency,
        "array_submit_s": round(array_s, 3),
        "client_process_roundtrip": client_s,
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
        start = time.perf_counter()
        jobs = ex.map_array(trivial_job_indexed, list(range(array)))
        result["array_submit_s"] = round(time.perf_counter() - start, 3)
        subprocess.run(["scancel", str(jobs[0].job_id).split("_")[0]], check=False)
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
    args = parser.parse_args()
    results: dict[str, Any] = {}
    executors = ["local"] + (["slurm"] if slurm_up() and not args.no_slurm else [])
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        root = Path(tmp)
        for executor in executors:
            results[executor] = {
                "broker": through_broker(executor, root, args.repeats, args.array),
                "plain_submitit": plain_submitit(executor, root, args.repeats, args.array),
            }
    print(json.dumps(results, indent=2))
    print(
        "\n| executor | broker submit-to-result (median) | plain submitit (median) | 1,000-task array submit: broker | plain submitit |"
    )
    print("|---|---|---|---|---|")
    for executor, row in results.items():
        print(
            f"| {executor} | {row['broker']['latency']['median_s']} s | {row['plain_submitit']['latency']['median_s']} s "
            f"| {row['broker']['array_submit_s']} s | {row['plain_submitit'].get('array_submit_s', 'n/a')} |"
        )


if __name__ == "__main__":
    main()
