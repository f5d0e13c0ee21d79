"""A sweep through the dispatcher: one job array in, one table and plot out of the ledger.

    python -m experiments.optimization sweep CONFIG --submit [--wait]      # one array, N tasks
        each task runs: python -m experiments.optimization sweep CONFIG --task {index}
    python -m experiments.optimization sweep CONFIG --collect --ledger URL [--group G | --tag T]

Submitting goes through ``remote-run`` (on the PATH inside the agent's sandbox, with
``REMOTE_RUN_SOCKET`` set; on the host pass ``--socket``, and the client is found as
``framework.dispatch.client`` when ``remote-run`` is not on the PATH). Each task learns its run
directory from ``RUN_DIR`` (set by the dispatcher) and writes ``metrics.json`` there; the broker
copies that file into the ledger when the run finishes. Collecting reads the finished runs' metrics
from the ledger, falling back to ``<run_dir>/metrics.json`` when the ledger holds no training
metrics for a run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from experiments.optimization.sweep import load_sweep, sweep_points

TASK_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def task_argv(config_path: Path, python: str) -> list[str]:
    """The argv of every array task; the dispatcher replaces ``{index}`` with the task index."""
    return [
        python,
        "-m",
        "experiments.optimization",
        "sweep",
        str(config_path),
        "--task",
        "{index}",
    ]


def client_command(client: str | None) -> list[str]:
    """How to start remote-run: an explicit script, the one on the PATH, or the framework's module."""
    if client:
        return [sys.executable, client] if client.endswith(".py") else [client]
    on_path = shutil.which("remote-run")
    if on_path:
        return [on_path]
    if importlib.util.find_spec("framework.dispatch.client") is not None:
        return [sys.executable, "-m", "framework.dispatch.client"]
    raise ValueError(
        "remote-run is not on the PATH and framework.dispatch.client cannot be imported: run this "
        "inside the agent's sandbox, or pass --client PATH to the remote-run script"
    )


def submit_sweep(
    config_path: Path,
    *,
    socket: str | None = None,
    client: str | None = None,
    python: str | None = None,
    wait: bool = False,
    tags: list[str] | None = None,
    cpus: int = 1,
    time_minutes: int | None = None,
) -> dict[str, Any]:
    """Submit every run of the sweep as ONE job array; returns {"group", "runs"[, "states"]}.

    The config is validated (every run's training settings) before anything is submitted. The
    array is named after the sweep (its ledger ``experiment``), so ``--collect`` finds it by name.
    """
    from experiments.optimization.sweep import expand_sweep

    config_path = Path(config_path).resolve()
    expand_sweep(config_path)  # raises ValueError naming the bad run / option
    sweep = load_sweep(config_path)
    count = len(sweep_points(sweep))
    if socket is None and not os.environ.get("REMOTE_RUN_SOCKET"):
        raise ValueError(
            "no broker socket: set REMOTE_RUN_SOCKET (it is set inside the agent's sandbox) or "
            "pass --socket PATH (the broker's channel directory holds broker.sock)"
        )
    command = client_command(client)
    if socket:
        command += ["--socket", socket]
    command += ["submit", "--json", "--array", f"0-{count - 1}", "--name", sweep.name]
    command += ["--cpus", str(cpus), "--cwd", os.getcwd()]
    if time_minutes:
        command += ["--time", str(time_minutes)]
    for tag in tags or []:
        command += ["--tag", tag]
    for name, value in TASK_ENV.items():
        command += ["--env", f"{name}={value}"]
    if wait:
        command.append("--wait")
    command += ["--", *task_argv(config_path, python or sys.executable)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise ValueError(
            f"remote-run exited {proc.returncode} submitting sweep {sweep.name!r}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    answer = json.loads(proc.stdout)
    if isinstance(answer, list):  # --wait: the final state of every run
        runs = [run["run_id"] for run in answer]
        group = runs[0].rsplit(".", 1)[0] if runs else ""
        return {"group": group, "runs": runs, "states": {r["run_id"]: r["state"] for r in answer}}
    return {"group": answer["group"], "runs": answer["runs"]}


def task_out_dir(out: Path | None) -> Path:
    """The run directory of an array task: --out when given, else the dispatcher's RUN_DIR."""
    if out is not None:
        return out
    run_dir = os.environ.get("RUN_DIR")
    if not run_dir:
        raise ValueError(
            "--task needs a run directory: pass --out DIR, or run it through the dispatcher "
            "(which sets RUN_DIR)"
        )
    return Path(run_dir)


def run_task(config_path: Path, index: int, out: Path, threads: int = 1) -> dict[str, Any]:
    """Train run ``index`` of the sweep into ``out`` (metrics.json + loss.png)."""
    from experiments.optimization.output import write_metrics
    from experiments.optimization.train import run_train

    sweep = load_sweep(config_path)
    points = sweep_points(sweep)
    if not 0 <= index < len(points):
        raise ValueError(
            f"--task {index} is out of range: sweep {sweep.name!r} in {config_path} has "
            f"{len(points)} runs (indices 0-{len(points) - 1})"
        )
    metrics = run_train(dict(points[index]), out, threads)
    metrics["sweep"] = {"name": sweep.name, "index": index, "runs": len(points)}
    write_metrics(out, metrics)
    return metrics


def ledger_metrics(
    ledger_url: str,
    experiment: str,
    *,
    tag: str | None = None,
    group: str | None = None,
    session_id: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Training metrics of the finished runs, one per sweep index (the latest), and problems.

    Problems name runs that did not finish or whose metrics are missing; the caller reports them.
    """
    from framework.ledger import open_ledger

    problems: list[str] = []
    by_index: dict[int, dict[str, Any]] = {}
    with open_ledger(ledger_url) as ledger:
        runs = ledger.runs(experiment=experiment, tag=tag, session_id=session_id)
    if group:
        runs = [r for r in runs if r.run_id == group or r.run_id.startswith(f"{group}.")]
    if not runs:
        raise ValueError(
            f"the ledger {ledger_url} has no runs of experiment {experiment!r}"
            + (f" with tag {tag!r}" if tag else "")
            + (f" in group {group!r}" if group else "")
            + ": was the sweep submitted with --submit, and under this name?"
        )
    for run in runs:
        if run.state != "finished":
            problems.append(
                f"{run.run_id}: {run.state}" + (f" ({run.reason})" if run.reason else "")
            )
            continue
        metrics = run.metrics
        if "final_val_loss" not in metrics and run.run_dir:
            path = Path(run.run_dir) / "metrics.json"
            if path.is_file():
                metrics = json.loads(path.read_text())
        if "final_val_loss" not in metrics:
            problems.append(f"{run.run_id}: finished without training metrics")
            continue
        index = metrics.get("sweep", {}).get("index", run.array_index)
        by_index[index if index is not None else len(by_index)] = {**metrics, "run_id": run.run_id}
    return [by_index[i] for i in sorted(by_index)], problems
