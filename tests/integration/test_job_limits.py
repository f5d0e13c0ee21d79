"""Jobs are held to the limits of settings (cluster.job_pids, cluster.job_memory_gb, max_array,
max_in_flight) on the real job runtimes: bubblewrap in a cgroup of its own, and Docker."""

from __future__ import annotations

import json
import os
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


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[tuple[BrokerHandle, Path, Path]]:
    require_bwrap()
    workspace = make_workspace(tmp_path)
    state = tmp_path / "state"
    settings = make_settings(workspace, state, max_array=1000, max_in_flight=30)
    handle = start_broker(workspace, settings, "limits-session")
    yield handle, workspace, state
    sock = handle.env["REMOTE_RUN_SOCKET"]
    for run in call({"op": "list"}, sock)["runs"]:
        if run["state"] in ("queued", "running"):
            call({"op": "cancel", "run": run["run_id"]}, sock)
    handle.stop()


def submit_array(handle: BrokerHandle, workspace: Path, argv: list[str], size: int) -> Any:
    request = {"argv": argv, "cwd": str(workspace), "array": list(range(size))}
    return call({"op": "submit", "request": request}, handle.env["REMOTE_RUN_SOCKET"])


def test_local_executor_refuses_an_array_past_max_array(
    local_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, state = local_broker
    answer = submit_array(handle, workspace, ["true"], 5000)
    assert not answer["ok"] and answer["field"] == "array"
    assert "cluster.max_array is 1000" in answer["error"]
    assert not (state / "runs").exists() or not any((state / "runs").iterdir())


def test_submissions_past_max_in_flight_are_refused_until_runs_end(
    local_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, _ = local_broker
    sock = handle.env["REMOTE_RUN_SOCKET"]
    first = submit_array(handle, workspace, ["sleep", "30"], 20)
    assert first["ok"], first
    refused = submit_array(handle, workspace, ["true"], 11)
    assert not refused["ok"] and "cluster.max_in_flight is 30" in refused["error"]
    assert submit_array(handle, workspace, ["true"], 10)["ok"]
    call({"op": "cancel", "run": first["group"]}, sock)
    deadline = time.monotonic() + 60
    while not (again := submit_array(handle, workspace, ["true"], 11))["ok"]:
        assert time.monotonic() < deadline, again
        time.sleep(0.2)


def test_a_submission_diff_is_stored_once_not_in_every_run_dir(
    local_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, state = local_broker
    size = 4 << 20
    (workspace / "data.bin").write_bytes(os.urandom(size))  # untracked: it goes into the diff
    before = tree_bytes(state)
    answer = submit_array(handle, workspace, ["true"], 20)
    assert answer["ok"], answer
    sock = handle.env["REMOTE_RUN_SOCKET"]
    runs = call({"op": "wait", "run": answer["group"], "timeout_s": 120}, sock)["runs"]
    assert [r["state"] for r in runs] == ["finished"] * 20
    grown = tree_bytes(state) - before
    # Once each: the snapshot's copy of the file, its git object and the diff (base85, about
    # 1.3x); 20 copies of the diff, one per run dir, were 20 x 5.4 MB more.
    assert grown < 4 * size, grown
    assert not any((Path(r["run_dir"]) / "snapshot.diff").exists() for r in runs)


def tree_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
