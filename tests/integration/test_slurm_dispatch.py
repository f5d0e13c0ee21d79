"""The broker on the real Slurm test cluster (.ci/components/40-slurm.sh: nodes n[1-4], 2 GPUs each)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.dispatch.broker import BrokerHandle, DispatchPaths, start_broker
from framework.dispatch.client import call
from framework.ledger import EventKind, open_ledger
from tests.integration.test_dispatch_broker import _pings, make_settings, make_workspace
from tests.integration.test_dispatch_docker import (
    assert_contained,
    docker_settings,
    host_secret,
    probe_argv,
    require_docker_jobs,
)
from tests.support import require_bwrap, unavailable

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
    # Accounting lags the job (slurmdbd is asynchronous): PENDING or RUNNING may show briefly.
    while (accounted := sacct_state(run["slurm_job_id"])) in (
        "PENDING",
        "RUNNING",
        "COMPLETING",
        "",
    ):
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


@pytest.mark.parametrize("code", [7, 200])  # 200: above 128, taken as a signal until sacct says
def test_failing_job_is_recorded_failed_with_its_exit_code(
    slurm_broker: tuple[BrokerHandle, Path, Path], code: int
) -> None:
    handle, workspace, _ = slurm_broker
    (run_id,) = submit(handle, workspace, ["python3", "exp.py"], env={"EXP_EXIT": str(code)})
    (run,) = wait(handle, run_id)
    assert (run["state"], run["exit_code"], run["reason"]) == ("failed", code, f"exit code {code}")


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


@pytest.mark.bwrap
def test_job_on_a_slurm_node_is_sandboxed_and_its_metrics_are_recorded(
    slurm_broker: tuple[BrokerHandle, Path, Path], tmp_path: Path
) -> None:
    require_bwrap()
    handle, workspace, state = slurm_broker
    ssh = Path.home() / ".ssh"
    created_dir = not ssh.exists()
    ssh.mkdir(mode=0o700, exist_ok=True)
    decoy = ssh / f"ar-test-decoy-{tmp_path.name}"
    decoy.write_text("host secret")
    probe = (
        "import runpy, sys\n"
        "for action, path in (('write', 'exp.py'), ('read', sys.argv[1])):\n"
        "    try:\n"
        "        open(path, 'a' if action == 'write' else 'r').read() if action == 'read' "
        "else open(path, 'a').write('x')\n"
        "        print('DID', action)\n"
        "    except OSError as exc:\n"
        "        print('refused', action, exc.errno)\n"
        "runpy.run_path('exp.py')\n"
    )
    before = (workspace / "exp.py").read_text()
    try:
        (run_id,) = submit(handle, workspace, ["python3", "-c", probe, str(decoy)])
        (run,) = wait(handle, run_id)
    finally:
        decoy.unlink()
        if created_dir:
            ssh.rmdir()
    run_dir = Path(run["run_dir"])
    assert run["state"] == "finished", (run_dir / "stderr.log").read_text()
    lines = (run_dir / "stdout.log").read_text().splitlines()
    assert lines[:2] == ["refused write 30", "refused read 2"]
    assert (workspace / "exp.py").read_text() == before
    started = json.loads((run_dir / "started.0.json").read_text())
    assert started["host"] in {"n1", "n2", "n3", "n4"}
    assert started["sandbox"]["runtime"] == "bwrap"
    with open_ledger(f"sqlite:///{state / 'ledger.sqlite'}") as ledger:
        assert ledger.run(run_id).metrics == {"loss": 0.25}


@pytest.mark.docker
def test_job_on_a_slurm_node_runs_in_a_docker_container_and_its_metrics_are_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_slurm_cluster()
    require_docker_jobs()
    workspace = make_workspace(tmp_path)
    state = tmp_path / "state"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-host-secret")  # exported to the job by sbatch
    settings = docker_settings(workspace, state, executor="slurm", max_nodes=4)
    handle = start_broker(workspace, settings, "slurm-docker")
    try:
        with socket.socket() as server, host_secret(tmp_path) as decoy:
            server.bind(("127.0.0.1", 0))
            server.listen()
            argv = probe_argv(decoy, state / "ledger.sqlite", server.getsockname()[1])
            (run_id,) = submit(handle, workspace, argv)
            (run,) = wait(handle, run_id)
    finally:
        handle.stop()
    run_dir = Path(run["run_dir"])
    assert run["state"] == "finished", (run_dir / "stderr.log").read_text()
    lines = (run_dir / "stdout.log").read_text().splitlines()
    assert_contained(json.loads(lines[0]))
    started = json.loads((run_dir / "started.0.json").read_text())
    assert started["host"] in {"n1", "n2", "n3", "n4"}
    assert started["sandbox"]["runtime"] == "docker"
    with open_ledger(f"sqlite:///{state / 'ledger.sqlite'}") as ledger:
        recorded = ledger.run(run_id)
        assert recorded.state == "finished" and recorded.metrics == {"loss": 0.25}
        assert recorded.extra["sandbox"] == "docker"


def test_broker_killed_while_slurm_jobs_run_loses_none_and_records_each_end_once(
    tmp_path: Path,
) -> None:
    require_slurm_cluster()
    workspace = make_workspace(tmp_path)
    state = tmp_path / "state"
    env = {
        **os.environ,
        "AR_STATE_DIR": str(state),
        "AR_CLUSTER__EXECUTOR": "slurm",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    sock = str(DispatchPaths(state).socket)
    command = [sys.executable, "-c", "from framework.cli import main; main()", "broker"]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*command, "-w", str(workspace)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not _pings(sock):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return proc

    broker = start()
    try:
        quick = ["python3", "-c", "import time; time.sleep(2); print('{index}')"]
        slow = ["python3", "-c", "import time; time.sleep(6); print('slow')"]
        runs = call(
            {"op": "submit", "request": {"argv": quick, "cwd": str(workspace), "array": [0, 1, 2]}},
            sock,
        )["runs"]
        runs += call({"op": "submit", "request": {"argv": slow, "cwd": str(workspace)}}, sock)[
            "runs"
        ]
        deadline = time.monotonic() + 60
        while any(
            call({"op": "status", "run": r}, sock)["runs"][0]["state"] == "queued" for r in runs
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        time.sleep(3)  # the quick tasks end while no broker is watching
        broker = start()
        finals = [call({"op": "wait", "run": r, "timeout_s": 90}, sock)["runs"][0] for r in runs]
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    assert [f["state"] for f in finals] == ["finished"] * 4, finals
    with open_ledger(f"sqlite:///{state / 'ledger.sqlite'}") as ledger:
        for run_id in runs:
            kinds = [e.kind for e in ledger.events(run_id=run_id)]
            assert kinds.count(EventKind.run_submitted) == 1, kinds
            assert kinds.count(EventKind.run_started) == 1, kinds
            assert kinds.count(EventKind.run_finished) == 1, kinds
        assert ledger.verify().ok


def test_cancelling_an_array_with_pending_tasks_records_every_task_cancelled(
    slurm_broker: tuple[BrokerHandle, Path, Path],
) -> None:
    handle, workspace, _ = slurm_broker
    sock = handle.env["REMOTE_RUN_SOCKET"]
    # 40 tasks on 16 CPUs: most are still pending (sacct reports them as one "ID_[a-b]" line).
    runs = submit(handle, workspace, ["sleep", "60"], array=list(range(40)))
    group = runs[0].rsplit(".", 1)[0]
    deadline = time.monotonic() + 60
    while not any(
        r["state"] == "running" for r in call({"op": "status", "run": group}, sock)["runs"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    call({"op": "cancel", "run": group}, sock)
    finals = wait(handle, group, timeout_s=90)
    assert [r["state"] for r in finals] == ["cancelled"] * 40, [r["state"] for r in finals]
