"""The remaining verbs against a real broker (local executor): remote-run logs, tail -f, nodes, list,
and the host-side `agentic-researcher jobs ...` commands, including the live table in a pipe."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from framework.cli import app
from framework.dispatch.broker import BrokerHandle, start_broker
from framework.dispatch.client import call
from tests.integration.test_dispatch_broker import make_settings, make_workspace

CHATTY = (
    "import sys, time\n"
    "print('first', flush=True)\n"
    "print('to stderr', file=sys.stderr, flush=True)\n"
    "time.sleep(float(sys.argv[1]))\n"
    "print('last', flush=True)\n"
)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def broker(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BrokerHandle]:
    state = tmp_path / "state"
    # `agentic-researcher jobs` finds the broker through the same settings.
    monkeypatch.setenv("AR_STATE_DIR", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("AR_CLUSTER__EXECUTOR", raising=False)
    handle = start_broker(
        workspace, make_settings(workspace, state, local_devices=["0", "1"]), "s-verbs"
    )
    yield handle
    for run in call({"op": "list"}, handle.env["REMOTE_RUN_SOCKET"])["runs"]:
        if run["state"] in ("queued", "running"):
            call({"op": "cancel", "run": run["run_id"]}, handle.env["REMOTE_RUN_SOCKET"])
    handle.stop()


def remote_run(
    handle: BrokerHandle, cwd: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(handle.client_path), *args],
        cwd=cwd,
        env={**os.environ, **handle.env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submitted(handle: BrokerHandle, workspace: Path, argv: list[str]) -> str:
    answer = call(
        {"op": "submit", "request": {"argv": argv, "cwd": str(workspace)}},
        handle.env["REMOTE_RUN_SOCKET"],
    )
    assert answer["ok"], answer
    return str(answer["runs"][0])


def finished(handle: BrokerHandle, run_id: str) -> dict[str, Any]:
    (run,) = call({"op": "wait", "run": run_id, "timeout_s": 60}, handle.env["REMOTE_RUN_SOCKET"])[
        "runs"
    ]
    return dict(run)


def test_logs_prints_a_runs_stdout_or_stderr(broker: BrokerHandle, workspace: Path) -> None:
    run_id = submitted(broker, workspace, ["python3", "-c", CHATTY, "0"])
    assert finished(broker, run_id)["state"] == "finished"
    out = remote_run(broker, workspace, "logs", run_id)
    err = remote_run(broker, workspace, "logs", run_id, "--stderr")
    assert (out.returncode, out.stdout) == (0, "first\nlast\n")
    assert (err.returncode, err.stdout) == (0, "to stderr\n")
    unknown = remote_run(broker, workspace, "logs", "no-such-run")
    assert unknown.returncode == 4 and "no run or group 'no-such-run'" in unknown.stderr


def test_tail_follow_streams_output_while_the_run_is_going_and_stops_at_its_end(
    broker: BrokerHandle, workspace: Path
) -> None:
    sock = broker.env["REMOTE_RUN_SOCKET"]
    run_id = submitted(broker, workspace, ["python3", "-c", CHATTY, "2"])
    follower = subprocess.Popen(
        [sys.executable, str(broker.client_path), "tail", "-f", run_id],
        cwd=workspace,
        env={**os.environ, **broker.env},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        state_when_first_arrived = call({"op": "status", "run": run_id}, sock)["runs"][0]["state"]
        rest, _ = follower.communicate(timeout=30)  # bounded: tail -f must end with the run
    finally:
        follower.kill()
    assert first == "first\n"
    assert state_when_first_arrived == "running"
    assert rest == "last\n" and follower.returncode == 0


def test_nodes_reports_this_machine_and_its_busy_gpus(
    broker: BrokerHandle, workspace: Path
) -> None:
    request = {"argv": ["sleep", "30"], "cwd": str(workspace), "resources": {"gpus": 1}}
    call({"op": "submit", "request": request}, broker.env["REMOTE_RUN_SOCKET"])
    deadline = time.monotonic() + 20
    while True:
        result = remote_run(broker, workspace, "nodes", "--json")
        (node,) = json.loads(result.stdout)
        if node["gpus_busy"] == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert node["name"] == socket.gethostname()
    assert (node["gpus_total"], node["gpus_busy"]) == (2, 1)
    table = remote_run(broker, workspace, "nodes")
    assert table.stdout.splitlines()[0].split("\t")[:3] == ["NODE", "STATE", "GPUS_FREE"]
    assert table.stdout.splitlines()[1].split("\t")[2] == "1"


def test_list_shows_every_run_with_its_state(broker: BrokerHandle, workspace: Path) -> None:
    ok = submitted(broker, workspace, ["true"])
    bad = submitted(broker, workspace, ["false"])
    finished(broker, ok)
    finished(broker, bad)
    result = remote_run(broker, workspace, "list", "--json")
    states = {r["run_id"]: r["state"] for r in json.loads(result.stdout)}
    assert states == {ok: "finished", bad: "failed"}
    text = remote_run(broker, workspace, "list").stdout
    assert f"{ok}\tfinished" in text and f"{bad}\tfailed" in text


def test_jobs_commands_drive_the_broker_from_the_host(
    broker: BrokerHandle, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    runner = CliRunner()
    ws = ["--workspace", str(workspace)]

    def jobs(*args: str) -> Any:
        return runner.invoke(app, ["jobs", *args, *ws], catch_exceptions=False)

    submitted_result = jobs(
        "submit", "--wait", "--json", "--name", "cli", "--", "python3", "exp.py"
    )
    assert submitted_result.exit_code == 0, submitted_result.output
    (run,) = json.loads(submitted_result.output)
    assert (run["state"], run["name"]) == ("finished", "cli")
    run_id = run["run_id"]

    status = jobs("status", run_id, "--json")
    assert json.loads(status.output)[0]["state"] == "finished"
    assert jobs("logs", run_id).output == f"hello from {run_id}\n"
    assert jobs("tail", run_id).output == f"hello from {run_id}\n"
    nodes = json.loads(jobs("nodes", "--json").output)
    assert [n["gpus_total"] for n in nodes] == [2]

    sleeper = jobs("submit", "--", "sleep", "30")
    sleeper_id = sleeper.output.strip()
    cancelled = jobs("cancel", sleeper_id, "--json")
    assert cancelled.exit_code == 0
    final = finished(broker, sleeper_id)
    assert final["state"] == "cancelled", final

    table = jobs("list")
    assert table.exit_code == 0 and run_id in table.output and "finished" in table.output

    failing = jobs("submit", "--wait", "--", "python3", "-c", "raise SystemExit(5)")
    assert failing.exit_code == 1


def test_live_table_in_a_pipe_prints_the_final_table_once_all_runs_end(
    broker: BrokerHandle, workspace: Path
) -> None:
    run_id = submitted(broker, workspace, ["sleep", "1"])
    started = time.monotonic()
    result = CliRunner().invoke(
        app,
        ["jobs", "list", "--live", "--until-done", "--interval", "0.2", "-w", str(workspace)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    assert time.monotonic() - started < 30
    assert run_id in result.output and "finished" in result.output
    assert "running" not in result.output.split(run_id)[-1].splitlines()[0]


def test_jobs_without_a_broker_says_how_to_start_one(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AR_STATE_DIR", str(tmp_path / "no-broker-state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr("framework.dispatch.client.CONNECT_RETRY_S", 0.1)
    result = CliRunner().invoke(app, ["jobs", "list", "-w", str(workspace)])
    assert result.exit_code == 3
    assert "agentic-researcher broker" in result.output
