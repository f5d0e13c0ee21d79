"""A hostile job plants links in its run directory (and swaps workspace directories) to make the
host-side broker and runner read, write or chown host files with the host's privileges. Each
test runs real jobs through the real broker (local executor) on real bubblewrap and real Docker.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.dispatch.broker import BrokerHandle, start_broker
from framework.dispatch.client import call
from framework.dispatch.runner import run_rank
from tests.integration.test_dispatch_broker import ledger_of, make_settings, make_workspace
from tests.integration.test_dispatch_docker import IMAGE, require_docker_jobs
from tests.support import require_bwrap

pytestmark = pytest.mark.slow

SECRET = "root-only-host-secret-7f3a"


@pytest.fixture(
    params=[
        pytest.param("bwrap", marks=pytest.mark.bwrap),
        pytest.param("docker", marks=pytest.mark.docker),
    ]
)
def runtime(request: pytest.FixtureRequest) -> str:
    if request.param == "bwrap":
        require_bwrap()
    else:
        require_docker_jobs()
    return str(request.param)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def broker(runtime: str, workspace: Path, tmp_path: Path) -> Iterator[BrokerHandle]:
    settings = make_settings(
        workspace, tmp_path / "state", local_devices=["0"], job_runtime=runtime
    )
    settings = settings.model_copy(
        update={"sandbox": settings.sandbox.model_copy(update={"image": IMAGE})}
    )
    handle = start_broker(workspace, settings, "s-run-dir-attacks")
    yield handle
    handle.stop()


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    """A root-only host file outside everything the job is given."""
    private = tmp_path / "host-private"
    private.mkdir(mode=0o700)
    secret = private / "credentials.json"
    secret.write_text(json.dumps({"api_key": SECRET}))
    secret.chmod(0o600)
    return secret


def ask(handle: BrokerHandle, payload: dict[str, Any]) -> dict[str, Any]:
    return dict(call(payload, handle.env["REMOTE_RUN_SOCKET"]))


def run_job(handle: BrokerHandle, workspace: Path, code: str) -> dict[str, Any]:
    request = {"argv": ["python3", "-c", code], "cwd": str(workspace)}
    answer = ask(handle, {"op": "submit", "request": request})
    assert answer["ok"], answer
    (run,) = ask(handle, {"op": "wait", "run": answer["runs"][0], "timeout_s": 120})["runs"]
    return dict(run)


def plant(name: str, target: Path) -> str:
    """Job code replacing ``name`` in its run dir with a link to ``target``."""
    return (
        "import os\n"
        f"path = os.path.join(os.environ['RUN_DIR'], {name!r})\n"
        "if os.path.lexists(path):\n"
        "    os.unlink(path)\n"
        f"os.symlink({str(target)!r}, path)\n"
        "print('planted')\n"
    )


def test_logs_of_any_rank_never_serve_a_link_planted_in_the_run_dir(
    broker: BrokerHandle, workspace: Path, host_secret: Path
) -> None:
    code = plant("stdout.7.log", host_secret) + plant("stdout.log", host_secret)
    run = run_job(broker, workspace, code)
    assert run["state"] == "finished", run
    for rank in (0, 7):
        answer = ask(broker, {"op": "logs", "run": run["run_id"], "rank": rank})
        assert SECRET not in json.dumps(answer)
        assert not answer["ok"] and "not a regular file" in answer["error"]


def test_metrics_json_planted_as_a_link_never_lands_in_the_ledger(
    broker: BrokerHandle, workspace: Path, host_secret: Path, tmp_path: Path
) -> None:
    code = plant("metrics.json", host_secret) + plant("artifacts/creds.json", host_secret)
    run = run_job(broker, workspace, code)
    assert run["state"] == "finished", run
    with ledger_of(tmp_path / "state") as ledger:
        recorded = ledger.run(run["run_id"])
    assert SECRET not in recorded.model_dump_json()
    assert not recorded.metrics and not recorded.artifacts


def test_a_link_planted_for_another_ranks_log_never_gets_that_ranks_output(
    runtime: str, broker: BrokerHandle, workspace: Path, host_secret: Path
) -> None:
    # Rank 0's job plants stdout.1.log; rank 1's runner (here run on the same run dir, as a
    # multi-task run's second rank would) must not append the job's text to the host file.
    run = run_job(broker, workspace, plant("stdout.1.log", host_secret))
    assert run["state"] == "finished", run
    run_dir = Path(run["run_dir"])
    task = json.loads((run_dir / "task.json").read_text())
    task["argv"] = ["python3", "-c", "print('agent text for the host file')"]
    before = host_secret.read_bytes()
    code = run_rank(run_dir, rank=1, world_size=2, task=task)
    assert host_secret.read_bytes() == before
    assert code == 126
    exit_1 = json.loads((run_dir / "exit.1.json").read_text())
    assert "unsafe run directory" in exit_1["reason"]


def test_a_link_planted_in_place_of_artifacts_never_makes_a_host_dir_the_agents(
    runtime: str, broker: BrokerHandle, workspace: Path, host_secret: Path
) -> None:
    private = host_secret.parent
    owner = (private.stat().st_uid, private.stat().st_gid)
    code = (
        "import os, shutil\n"
        "path = os.path.join(os.environ['RUN_DIR'], 'artifacts')\n"
        "shutil.rmtree(path)\n"
        f"os.symlink({str(private)!r}, path)\n"
    )
    run = run_job(broker, workspace, code)
    assert run["state"] == "finished", run
    run_dir = Path(run["run_dir"])
    # The next rank of the same run starts there (a multi-task run, or a restarted rank).
    task = json.loads((run_dir / "task.json").read_text())
    code = run_rank(run_dir, rank=1, world_size=2, task=task)
    assert (private.stat().st_uid, private.stat().st_gid) == owner
    assert private.stat().st_mode & 0o777 == 0o700
    assert code == 126


def test_an_ignored_dir_swapped_for_a_link_never_puts_a_host_dir_into_a_job(
    broker: BrokerHandle, workspace: Path, host_secret: Path
) -> None:
    (workspace / ".gitignore").write_text("data/\n")
    data = workspace / "data"
    data.mkdir()
    (data / "credentials.json").write_text('{"api_key": "the workspace own data"}')
    stop = threading.Event()

    def swap() -> None:
        # The agent's side of the race: data/ becomes a link to the host dir and back, all the
        # time, so some submissions see a directory that is a link by the time the job starts.
        real = workspace / "data.real"
        while not stop.is_set():
            with contextlib.suppress(OSError):
                data.rename(real)
                data.symlink_to(host_secret.parent)
                time.sleep(random.uniform(0, 0.004))
                data.unlink()
                real.rename(data)
                time.sleep(random.uniform(0, 0.004))

    code = (
        "try:\n"
        "    print(open('data/credentials.json').read())\n"
        "except OSError as exc:\n"
        "    print('unreadable', exc.errno)\n"
    )
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    outcomes: list[str] = []
    try:
        for _ in range(30):
            request = {"argv": ["python3", "-c", code], "cwd": str(workspace)}
            answer = ask(broker, {"op": "submit", "request": request})
            if not answer["ok"]:
                outcomes.append("refused at submit")
                continue
            (run,) = ask(broker, {"op": "wait", "run": answer["runs"][0], "timeout_s": 120})["runs"]
            logs = ask(broker, {"op": "logs", "run": run["run_id"]})
            err = ask(broker, {"op": "logs", "run": run["run_id"], "stream": "stderr"})
            assert SECRET not in json.dumps([logs, err, run]), run
            outcomes.append(run["state"])
    finally:
        stop.set()
        swapper.join()
        with contextlib.suppress(OSError):
            if data.is_symlink():
                data.unlink()
                (workspace / "data.real").rename(data)
    assert len(outcomes) == 30
