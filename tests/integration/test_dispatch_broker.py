"""The broker with the local executor, driven through its real socket and the real remote-run client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.config import Settings, load_settings
from framework.dispatch.broker import BrokerHandle, DispatchPaths, start_broker
from framework.dispatch.client import call
from framework.ledger import EventKind, open_ledger


def make_workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    (workspace / "exp.py").write_text(
        "import json, os, sys\n"
        "print('hello from', os.environ['RUN_ID'])\n"
        "json.dump({'loss': 0.25}, open(os.environ['METRICS_FILE'], 'w'))\n"
        "open(os.path.join(os.environ['ARTIFACTS_DIR'], 'model.txt'), 'w').write('w')\n"
        "sys.exit(int(os.environ.get('EXP_EXIT', '0')))\n"
    )
    for args in (
        ["add", "exp.py"],
        ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "exp"],
    ):
        subprocess.run(["git", "-C", str(workspace), *args], check=True)
    return workspace


def make_settings(workspace: Path, state: Path, **cluster: Any) -> Settings:
    flags = {"state_dir": str(state), "cluster": cluster}
    return load_settings(workspace=workspace, flags=flags, environ={"HOME": str(state)}).settings


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def broker(workspace: Path, tmp_path: Path) -> Iterator[BrokerHandle]:
    handle = start_broker(
        workspace, make_settings(workspace, tmp_path / "state", local_devices=["0", "1"]), "s-1"
    )
    yield handle
    handle.stop()


def remote_run(
    handle_env: dict[str, str], cwd: Path, *args: str, client: Path
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **handle_env}
    return subprocess.run(
        [sys.executable, str(client), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ledger_of(state: Path) -> Any:
    return open_ledger(f"sqlite:///{state / 'ledger.sqlite'}")


def test_trivial_job_runs_and_its_results_are_recorded(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    result = remote_run(
        broker.env,
        workspace,
        "--wait",
        "--json",
        "--name",
        "smoke",
        "--tag",
        "t1",
        "--",
        "python3",
        "exp.py",
        client=broker.client_path,
    )
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert run["state"] == "finished"
    run_dir = Path(run["run_dir"])
    assert run_dir.parent == tmp_path / "state" / "runs"
    assert (run_dir / "stdout.log").read_text() == f"hello from {run['run_id']}\n"
    with ledger_of(tmp_path / "state") as ledger:
        state = ledger.run(run["run_id"])
        assert state.state == "finished"
        assert state.metrics == {"loss": 0.25}
        assert state.artifacts == ["artifacts/model.txt"]
        assert state.git_commit and len(state.git_commit) == 40
        assert state.experiment == "smoke" and state.tags == ["t1"] and state.session_id == "s-1"
        assert ledger.verify().ok


def test_failing_job_is_recorded_failed_and_remote_run_exits_1(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    result = remote_run(
        broker.env,
        workspace,
        "--wait",
        "--env",
        "EXP_EXIT=3",
        "--",
        "python3",
        "exp.py",
        client=broker.client_path,
    )
    assert result.returncode == 1
    assert "failed" in result.stdout and "exit=3" in result.stdout
    run_id = result.stdout.split()[0]
    with ledger_of(tmp_path / "state") as ledger:
        assert ledger.run(run_id).state == "failed"
        assert ledger.run(run_id).exit_code == 3


def test_shell_metacharacters_reach_the_program_as_literal_arguments(
    broker: BrokerHandle, workspace: Path
) -> None:
    marker = workspace / "pwned"
    hostile = f"; touch {marker} && $(touch {marker}) `touch {marker}`"
    result = remote_run(
        broker.env, workspace, "--wait", "--json", "--", "echo", hostile, client=broker.client_path
    )
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert (Path(run["run_dir"]) / "stdout.log").read_text() == hostile + "\n"
    assert not marker.exists()


def raw_request(sock: str, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(sock)
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return json.loads(answer)


def test_hostile_requests_are_rejected_logged_and_nothing_runs(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    sock = broker.env["REMOTE_RUN_SOCKET"]
    marker = tmp_path / "executed"
    touch = ["touch", str(marker)]
    cases = {
        b"this is not json\n": "request",
        json.dumps(
            {"op": "submit", "request": {"argv": touch, "cwd": "../"}}
        ).encode(): "request.cwd",
        json.dumps({"op": "submit", "request": {"argv": touch, "cwd": "/tmp"}}).encode(): "cwd",
        json.dumps(
            {"op": "submit", "request": {"argv": touch, "shell": True}}
        ).encode(): "request.shell",
        json.dumps(
            {"op": "submit", "request": {"argv": touch, "env": {"LD_PRELOAD": "x"}}}
        ).encode(): "request.env",
        json.dumps({"op": "submit", "request": {"argv": ["x" * 100_000]}}).encode(): "request.argv",
        json.dumps(
            {"op": "submit", "request": {"argv": touch, "resources": {"gpus": 3}}}
        ).encode(): "resources.gpus",
    }
    for data, field in cases.items():
        answer = raw_request(sock, data + b"\n")
        assert answer["ok"] is False and answer["field"] == field, (data[:80], answer)
    huge = raw_request(
        sock, b'{"op": "submit", "request": {"argv": ["' + b"a" * 400_000 + b'"]}}\n'
    )
    assert (
        huge["ok"] is False
        and huge["field"] == "request"
        and "larger than the limit" in huge["error"]
    )
    time.sleep(0.3)
    assert not marker.exists()
    rejected = (DispatchPaths(tmp_path / "state").rejected_log).read_text().splitlines()
    assert len(rejected) == len(cases) + 1
    with ledger_of(tmp_path / "state") as ledger:
        assert ledger.runs() == []
        events = ledger.events(kind=EventKind.request_rejected)
        assert ledger.verify().ok
    assert [e.payload["field"] for e in events] == [*cases.values(), "request"]
    assert all(e.session_id == "s-1" and e.run_id is None for e in events)
    by_field = {e.payload["field"]: e.payload for e in events}
    assert by_field["request.env"]["request"]["request"]["env"] == {"LD_PRELOAD": "x"}
    assert "LD_PRELOAD" in by_field["request.env"]["reason"]
    # A 100,000-character argument and a 400 KB request leave a bounded copy, not themselves.
    assert all(len(json.dumps(e.payload)) < 4_000 for e in events)
    assert by_field["request.argv"]["request"]["request"]["argv"][0].endswith("(100000 characters)")
    assert by_field["request"]["bytes"] > 256 * 1024
    # The broker still serves well-formed requests afterwards.
    assert call({"op": "ping"}, sock)["ok"]


def test_cancel_stops_a_running_job_and_records_it(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    sock = broker.env["REMOTE_RUN_SOCKET"]
    answer = call(
        {"op": "submit", "request": {"argv": ["sleep", "60"], "cwd": str(workspace)}}, sock
    )
    (run_id,) = answer["runs"]
    deadline = time.monotonic() + 10
    while call({"op": "status", "run": run_id}, sock)["runs"][0]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    result = remote_run(broker.env, workspace, "cancel", run_id, client=broker.client_path)
    assert result.returncode == 0
    (final,) = call({"op": "wait", "run": run_id, "timeout_s": 10}, sock)["runs"]
    assert final["state"] == "cancelled"
    with ledger_of(tmp_path / "state") as ledger:
        assert ledger.run(run_id).state == "cancelled"


def test_200_concurrent_submissions_are_recorded_exactly_once(
    workspace: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    handle = start_broker(workspace, make_settings(workspace, state, local_devices=["0"]), None)
    sock = handle.env["REMOTE_RUN_SOCKET"]
    try:
        blocker = call(
            {
                "op": "submit",
                "request": {
                    "argv": ["sleep", "30"],
                    "cwd": str(workspace),
                    "resources": {"gpus": 1},
                },
            },
            sock,
        )
        results: list[dict[str, Any]] = []
        lock = threading.Lock()

        def submit(i: int) -> None:
            request = {
                "argv": ["true"],
                "cwd": str(workspace),
                "resources": {"gpus": 1},
                "client_token": f"token-{i:04d}",
            }
            answer = call({"op": "submit", "request": request}, sock)
            again = call({"op": "submit", "request": request}, sock)  # a retried submit
            with lock:
                results.extend([answer, again])

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r["ok"] for r in results)
        run_ids = {run for r in results for run in r["runs"]}
        assert len(run_ids) == 200
        with ledger_of(state) as ledger:
            submitted = [e.run_id for e in ledger.events(kind=EventKind.run_submitted)]
        assert sorted(submitted) == sorted([*run_ids, blocker["runs"][0]])
        for run_id in [*blocker["runs"], *run_ids]:
            call({"op": "cancel", "run": run_id}, sock)
    finally:
        handle.stop()


def test_broker_killed_and_restarted_loses_no_job(workspace: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {
        **os.environ,
        "AR_STATE_DIR": str(state),
        "AR_CLUSTER__LOCAL_DEVICES": '["0"]',
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    sock = str(DispatchPaths(state).socket)
    cmd = [
        sys.executable,
        "-c",
        "from framework.cli import main; main()",
        "broker",
        "-w",
        str(workspace),
    ]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not Path(sock).exists() or not _pings(sock):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return proc

    broker = start()
    try:
        script = "import time, sys; time.sleep(1.5); print('done')"
        runs = []
        for _ in range(3):
            request = {
                "argv": ["python3", "-c", script],
                "cwd": str(workspace),
                "resources": {"gpus": 1},
            }
            runs += call({"op": "submit", "request": request}, sock)["runs"]
        time.sleep(0.5)  # the first runs, the other two wait for the single GPU
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        broker = start()
        finals = [call({"op": "wait", "run": r, "timeout_s": 60}, sock)["runs"][0] for r in runs]
        assert [f["state"] for f in finals] == ["finished"] * 3, finals
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    with ledger_of(state) as ledger:
        for run_id in runs:
            kinds = [e.kind for e in ledger.events(run_id=run_id)]
            assert kinds.count(EventKind.run_submitted) == 1
            assert kinds.count(EventKind.run_finished) == 1, kinds
        assert ledger.verify().ok


def _pings(sock: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(sock)
            conn.sendall(b'{"op": "ping"}\n')
            return b'"ok": true' in conn.recv(4096)
    except OSError:
        return False


def test_refusals_beyond_the_rate_limit_are_counted_not_recorded_one_by_one(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framework.dispatch import broker as broker_module

    monkeypatch.setattr(broker_module, "REJECTIONS_BURST", 5)
    monkeypatch.setattr(broker_module, "REJECTIONS_PER_S", 0.001)  # no refill within the test
    handle = start_broker(workspace, make_settings(workspace, tmp_path / "state"), "s-1")
    sock = handle.env["REMOTE_RUN_SOCKET"]
    try:
        for _ in range(40):  # an agent retrying a refused request in a loop
            assert raw_request(sock, b"not json\n")["ok"] is False
    finally:
        handle.stop()
    with ledger_of(tmp_path / "state") as ledger:
        events = ledger.events(kind=EventKind.request_rejected)
        assert ledger.verify().ok
    assert len(events) == 6  # five recorded one by one, then the count written at stop
    assert [e.payload["field"] for e in events[:5]] == ["request"] * 5
    assert events[-1].payload["field"] == "rate-limit" and events[-1].payload["suppressed"] == 35
    log = (DispatchPaths(tmp_path / "state").rejected_log).read_text().splitlines()
    assert len(log) == 6 and json.loads(log[-1])["suppressed"] == 35
