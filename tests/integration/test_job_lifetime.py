"""No job outlives the session that submitted it unless it asked to detach, and the ledger says
what happened: on the real local executor (bwrap jobs) and the real Slurm test cluster."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from framework.dispatch.broker import BrokerHandle, start_broker
from framework.dispatch.client import call
from framework.dispatch.local import pid_alive
from tests.integration.test_dispatch_broker import ledger_of, make_settings, make_workspace
from tests.support import require_bwrap


def submit(handle: BrokerHandle, workspace: Path, **extra: Any) -> str:
    request = {"argv": ["sleep", "300"], "cwd": str(workspace), **extra}
    answer = call({"op": "submit", "request": request}, handle.env["REMOTE_RUN_SOCKET"])
    assert answer["ok"], answer
    return str(answer["runs"][0])


def runner_pid(run: dict[str, Any]) -> int:
    return int(json.loads(Path(run["run_dir"], "started.0.json").read_text())["pid"])


def running(handle: BrokerHandle, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        (run,) = call({"op": "status", "run": run_id}, handle.env["REMOTE_RUN_SOCKET"])["runs"]
        if run["state"] == "running" and Path(run["run_dir"], "started.0.json").exists():
            return dict(run)
        assert time.monotonic() < deadline, run
        time.sleep(0.1)


@pytest.mark.parametrize("executor", ["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def test_session_end_cancels_its_jobs_unless_detached_and_the_ledger_says_so(
    tmp_path: Path, executor: str
) -> None:
    require_bwrap()
    if executor == "slurm":
        from tests.integration.test_slurm_dispatch import require_slurm_cluster

        require_slurm_cluster()
    workspace = make_workspace(tmp_path)
    state = tmp_path / "state"
    limits = {"local_workers": 8} if executor == "local" else {}
    settings = make_settings(workspace, state, executor=executor, **limits)
    handle = start_broker(workspace, settings, "ending-session")
    attached = submit(handle, workspace)
    queued = submit(handle, workspace, array=list(range(3)))  # some may never start
    detached = submit(handle, workspace, detach=True)
    runs = {run_id: running(handle, run_id) for run_id in (attached, detached)}
    handle.end_session()

    with ledger_of(state) as ledger:
        ended = ledger.run(attached)
        assert ended.state.value == "cancelled" and ended.reason == "cancelled at session end"
        for index in range(3):
            other = ledger.run(f"{queued.rsplit('.', 1)[0]}.{index}")
            assert other.state.value == "cancelled", other
            assert other.reason == "cancelled at session end"
        kept = ledger.run(detached)
        assert kept.state.value == "running" and kept.extra.get("detach") is True
    if executor == "local":
        attached_pid, detached_pid = (runner_pid(runs[r]) for r in (attached, detached))
        assert not pid_alive(attached_pid)
        assert pid_alive(detached_pid)
        os.killpg(detached_pid, signal.SIGKILL)
    else:
        import subprocess

        subprocess.run(["scancel", runs[detached]["slurm_job_id"]], check=False)
