"""The broker on the real Slurm test cluster (.ci/components/40-slurm.sh: nodes n[1-4], 2 GPUs each)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.dispatch.broker import BrokerHandle, start_broker
from framework.dispatch.client import call
from framework.ledger import open_ledger
from tests.integration.test_dispatch_broker import make_settings, make_workspace
from tests.support import unavailable

pytestmark = pytest.mark.slurm


def require_slurm_cluster() -> None:
    if shutil.which("sinfo") is None:
        unavailable("slurm cluster", "sinfo is not on PATH (run .ci/components/40-slurm.sh)")
    probe = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        unavailable(
            "slurm cluster",
            f"slurmctld does not answer: {probe.stdout.strip()} {probe.stderr.strip()}",
        )
    subprocess.run(
        ["scontrol", "update", "nodename=n[1-4]", "state=resume"], capture_output=True, check=False
    )
    deadline = time.monotonic() + 30
    while True:
        up = subprocess.run(
            ["sinfo", "-h", "-N", "-r", "-o", "%N %t"], capture_output=True, text=True
        ).stdout.split("\n")
        if sum(1 for line in up if line.split()[-1:] in (["idle"], ["mix"], ["alloc"])) >= 4:
            return
        if time.monotonic() > deadline:
            unavailable("slurm cluster", f"four responding nodes expected, sinfo says {up}")
        time.sleep(0.5)


@pytest.fixture
def slurm_broker(tmp_path: Path) -> Iterator[tuple[BrokerHandle, Path, Path]]:
    require_slurm_cluster()
    workspace = make_workspace(tmp_path)
    state = tmp_path / "state"
    handle = start_broker(
        workspace,
        make_settings(workspace, state, executor="slurm", max_nodes=4, gpus_per_node=2),
        "slurm-session",
    )
    yield handle, workspace, state
    for run in call({"op": "list"}, handle.env["REMOTE_RUN_SOCKET"])["runs"]:
        if run["state"] in ("queued", "running"):
            call({"op": "cancel", "run": run["run_id"]}, handle.env["REMOTE_RUN_SOCKET"])
    handle.stop()


def submit(handle: BrokerHandle, workspace: Path, argv: list[str], **extra: Any) -> list[str]:
    answer = call(
        {"op": "submit", "request": {"argv": argv, "cwd": str(workspace), **extra}},
        handle.env["REMOTE_RUN_SOCKET"],
    )
    assert answer["ok"], answer
    return answer["runs"]


def wait(handle: BrokerHandle, run: str, timeout_s: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = call({"op": "wait", "run": run, "timeout_s": 30}, handle.env["REMOTE_RUN_SOCKET"])[
            "runs"
        ]
        if (
            all(r["state"] in ("finished", "failed", "cancelled") for r in runs)
            or time.monotonic() > deadline
        ):
            return runs


def wait_running(handle: BrokerHandle, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        (run,) = call({"op": "status", "run": run_id}, handle.env["REMOTE_RUN_SOCKET"])["runs"]
        if run["state"] == "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def test_single_job_runs_on_a_node_and_is_recorded_with_its_slurm_id(
    slurm_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, state = slurm_broker
    (run_id,) = submit(handle, workspace, ["python3", "exp.py"])
    (run,) = wait(handle, run_id)
    assert run["state"] == "finished", run
    assert run["nodes"] and set(run["nodes"]) <= {"n1", "n2", "n3", "n4"}
    with open_ledger(f"sqlite:///{state / 'ledger.sqlite'}") as ledger:
        recorded = ledger.run(run_id)
    assert recorded.executor == "slurm" and recorded.slurm_job_id == run["slurm_job_id"]
    assert recorded.metrics == {"loss": 0.25}
    deadline = time.monotonic() + 15
    while (accounted := sacct_state(run["slurm_job_id"])) in ("RUNNING", "COMPLETING", ""):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert accounted == "COMPLETED"


def sacct_state(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True
    )
    return out.stdout.strip()


def test_array_of_20_tasks_spreads_over_the_nodes(
    slurm_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, _ = slurm_broker
    runs = submit(
        handle,
        workspace,
        ["python3", "-c", "import time; time.sleep(1); print({index})"],
        array=list(range(20)),
    )
    assert len(runs) == 20
    group = runs[0].rsplit(".", 1)[0]
    finals = wait(handle, group)
    assert [r["state"] for r in finals] == ["finished"] * 20
    assert len({node for r in finals for node in r["nodes"]}) >= 2
    for r in finals:
        assert (Path(r["run_dir"]) / "stdout.log").read_text() == f"{r['array_index']}\n"


def test_two_node_job_tasks_see_their_ranks(slurm_broker: tuple[BrokerHandle, Path, Path]) -> None:
    handle, workspace, _ = slurm_broker
    probe = (
        "import json, os; keys = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'SLURMD_NODENAME'); "
        "json.dump({k: os.environ.get(k) for k in keys}, "
        "open(os.path.join(os.environ['ARTIFACTS_DIR'], 'rank' + os.environ['RANK'] + '.json'), 'w'))"
    )
    (run_id,) = submit(
        handle, workspace, ["python3", "-c", probe], resources={"nodes": 2, "gpus": 1}
    )
    (run,) = wait(handle, run_id)
    assert run["state"] == "finished", run
    ranks = [
        json.loads((Path(run["run_dir"]) / "artifacts" / f"rank{r}.json").read_text())
        for r in (0, 1)
    ]
    assert [r["RANK"] for r in ranks] == ["0", "1"]
    assert {r["WORLD_SIZE"] for r in ranks} == {"2"}
    assert {r["LOCAL_RANK"] for r in ranks} == {"0"}
    assert len({r["SLURMD_NODENAME"] for r in ranks}) == 2
    assert len({(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in ranks}) == 1
    assert sorted(run["nodes"]) == sorted(r["SLURMD_NODENAME"] for r in ranks)


def test_cancel_of_a_running_slurm_job_is_recorded(
    slurm_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, _ = slurm_broker
    (run_id,) = submit(handle, workspace, ["sleep", "120"])
    assert wait_running(handle, run_id)["state"] == "running"
    call({"op": "cancel", "run": run_id}, handle.env["REMOTE_RUN_SOCKET"])
    (run,) = wait(handle, run_id, timeout_s=60)
    assert run["state"] == "cancelled", run


def test_failing_job_is_recorded_failed_with_its_exit_code(
    slurm_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, _ = slurm_broker
    (run_id,) = submit(handle, workspace, ["python3", "exp.py"], env={"EXP_EXIT": "7"})
    (run,) = wait(handle, run_id)
    assert (run["state"], run["exit_code"]) == ("failed", 7)


def test_node_taken_down_mid_job_fails_the_run(
    slurm_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, _ = slurm_broker
    (run_id,) = submit(handle, workspace, ["sleep", "120"])
    running = wait_running(handle, run_id)
    assert running["state"] == "running" and running["nodes"]
    node = running["nodes"][0]
    try:
        subprocess.run(
            ["scontrol", "update", f"nodename={node}", "state=down", "reason=test"], check=True
        )
        (run,) = wait(handle, run_id, timeout_s=90)
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
    assert run["state"] == "failed", run
    assert "node failure" in run["reason"]


def test_nodes_verb_reports_what_slurm_reports(
    slurm_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, _, _ = slurm_broker
    nodes = call({"op": "nodes"}, handle.env["REMOTE_RUN_SOCKET"])["nodes"]
    sinfo = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %G"], capture_output=True, text=True
    ).stdout.split("\n")
    expected = {
        line.split()[0]: int(line.split()[1].split(":")[-1].split("(")[0])
        for line in sinfo
        if line.strip()
    }
    assert {n["name"]: n["gpus_total"] for n in nodes} == expected


@pytest.mark.slow
def test_job_exceeding_its_time_limit_is_recorded_failed(
    slurm_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, _ = slurm_broker
    (run_id,) = submit(handle, workspace, ["sleep", "600"], resources={"time_minutes": 1})
    (run,) = wait(handle, run_id, timeout_s=240)
    assert run["state"] == "failed", run
    assert "time limit" in run["reason"]
