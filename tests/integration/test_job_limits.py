"""Jobs are held to the limits of settings (cluster.job_pids, cluster.job_memory_gb, max_array,
max_in_flight) on the real job runtimes: bubblewrap in a cgroup of its own, and Docker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.dispatch.broker import BrokerHandle, start_broker
from framework.dispatch.client import call
from tests.integration.test_dispatch_broker import make_settings, make_workspace
from tests.integration.test_dispatch_docker import IMAGE, require_docker_jobs
from tests.support import require_bwrap

FORK_BOMB = """
import os, sys, time
made = 0
try:
    while made < 400:  # bounded, so that a test of the old code cannot take the host down
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        made += 1
    print("unlimited", made)
except OSError as exc:
    print("stopped", made, exc.errno)
"""

MEMORY_HOG = """
hog = b"x" * (768 << 20)
print("allocated", len(hog))
"""


def runtime_settings(runtime: str, workspace: Path, state: Path, **cluster: Any) -> Any:
    if runtime == "docker":
        require_docker_jobs()
    else:
        require_bwrap()
    settings = make_settings(workspace, state, job_runtime=runtime, **cluster)
    return settings.model_copy(
        update={"sandbox": settings.sandbox.model_copy(update={"image": IMAGE})}
    )


@pytest.fixture(params=["bwrap", pytest.param("docker", marks=pytest.mark.docker)])
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[BrokerHandle, Path]]:
    workspace = make_workspace(tmp_path)
    settings = runtime_settings(
        request.param, workspace, tmp_path / "state", job_pids=64, job_memory_gb=0.25
    )
    handle = start_broker(workspace, settings, "limits-session")
    yield handle, workspace
    handle.stop()


def run_to_end(handle: BrokerHandle, workspace: Path, code: str) -> dict[str, Any]:
    sock = handle.env["REMOTE_RUN_SOCKET"]
    answer = call(
        {"op": "submit", "request": {"argv": ["python3", "-c", code], "cwd": str(workspace)}},
        sock,
    )
    assert answer["ok"], answer
    (run_id,) = answer["runs"]
    deadline = time.monotonic() + 120
    while True:
        (run,) = call({"op": "wait", "run": run_id, "timeout_s": 30}, sock)["runs"]
        if run["state"] in ("finished", "failed", "cancelled"):
            return dict(run)
        assert time.monotonic() < deadline, run


def test_fork_bomb_in_a_job_is_stopped_by_its_process_limit(
    limited: tuple[BrokerHandle, Path],
) -> None:
    handle, workspace = limited
    run = run_to_end(handle, workspace, FORK_BOMB)
    out = (Path(run["run_dir"]) / "stdout.log").read_text().split()
    assert out[0] == "stopped", out
    assert int(out[1]) < 64  # cluster.job_pids, the whole sandbox included
    started = json.loads((Path(run["run_dir"]) / "started.0.json").read_text())
    if started["sandbox"]["runtime"] == "bwrap":
        assert started["sandbox"]["limits"]["cgroup"] in (1, 2), started
        assert started["sandbox"]["limits"]["pids"] == 64


def test_memory_hog_in_a_job_is_stopped_by_its_memory_limit(
    limited: tuple[BrokerHandle, Path],
) -> None:
    handle, workspace = limited
    run = run_to_end(handle, workspace, MEMORY_HOG)
    assert run["state"] == "failed", run
    assert "allocated" not in (Path(run["run_dir"]) / "stdout.log").read_text()
