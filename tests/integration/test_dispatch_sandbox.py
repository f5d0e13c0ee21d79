"""Jobs run in a real bwrap sandbox on the node, from the workspace snapshot taken at submit time.

Each test submits through the broker's socket (local executor) and tries to break one property.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.dispatch.broker import BrokerHandle, start_broker
from framework.dispatch.client import call
from tests.integration.test_dispatch_broker import ledger_of, make_settings, make_workspace
from tests.support import require_binary, require_bwrap

pytestmark = pytest.mark.bwrap


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def broker(workspace: Path, tmp_path: Path) -> Iterator[BrokerHandle]:
    require_bwrap()
    settings = make_settings(workspace, tmp_path / "state", local_devices=["0"])
    handle = start_broker(workspace, settings, "s-sandbox")
    yield handle
    handle.stop()


def submit(handle: BrokerHandle, workspace: Path, argv: list[str], **extra: Any) -> str:
    answer = call(
        {"op": "submit", "request": {"argv": argv, "cwd": str(workspace), **extra}},
        handle.env["REMOTE_RUN_SOCKET"],
    )
    assert answer["ok"], answer
    return str(answer["runs"][0])


def finish(handle: BrokerHandle, run_id: str) -> dict[str, Any]:
    (run,) = call({"op": "wait", "run": run_id, "timeout_s": 60}, handle.env["REMOTE_RUN_SOCKET"])[
        "runs"
    ]
    assert run["state"] in ("finished", "failed"), run
    return dict(run)


def run_python(handle: BrokerHandle, workspace: Path, code: str, **extra: Any) -> dict[str, Any]:
    return finish(handle, submit(handle, workspace, ["python3", "-c", code], **extra))


def output(run: dict[str, Any], stream: str = "stdout") -> str:
    return (Path(run["run_dir"]) / f"{stream}.log").read_text()


def test_job_cannot_write_the_workspace(broker: BrokerHandle, workspace: Path) -> None:
    code = (
        "import os\n"
        "for target in ('exp.py', 'new_file.txt'):\n"
        "    try:\n"
        "        open(target, 'a').write('tampered')\n"
        "        print('wrote', target)\n"
        "    except OSError as exc:\n"
        "        print('refused', target, exc.errno)\n"
    )
    before = (workspace / "exp.py").read_text()
    run = run_python(broker, workspace, code)
    assert run["state"] == "finished", output(run, "stderr")
    assert "wrote" not in output(run)
    assert output(run).count("refused") == 2
    assert (workspace / "exp.py").read_text() == before
    assert not (workspace / "new_file.txt").exists()


def test_job_cannot_read_host_ssh_dir_state_dir_or_ledger(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    ssh = Path.home() / ".ssh"
    created_dir = not ssh.exists()
    ssh.mkdir(mode=0o700, exist_ok=True)
    decoy = ssh / f"ar-test-decoy-{tmp_path.name}"
    decoy.write_text("host secret")
    ledger = tmp_path / "state" / "ledger.sqlite"
    try:
        code = (
            "import sys\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n"
            "        open(path).read(); print('READ', path)\n"
            "    except OSError as exc:\n"
            "        print('hidden', path, exc.errno)\n"
        )
        run = finish(
            broker,
            submit(broker, workspace, ["python3", "-c", code, str(decoy), str(ledger)]),
        )
    finally:
        decoy.unlink()
        if created_dir:
            ssh.rmdir()
    assert run["state"] == "finished", output(run, "stderr")
    assert ledger.exists()
    assert "READ" not in output(run)
    assert output(run).count("hidden") == 2


def test_job_writes_its_run_dir_and_its_metrics_are_recorded(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    run = finish(broker, submit(broker, workspace, ["python3", "exp.py"]))
    assert run["state"] == "finished", output(run, "stderr")
    assert run["sandbox"] == "bwrap"
    run_dir = Path(run["run_dir"])
    assert (run_dir / "artifacts" / "model.txt").read_text() == "w"
    started = json.loads((run_dir / "started.0.json").read_text())
    assert started["sandbox"]["runtime"] == "bwrap" and started["sandbox"]["network"] == "none"
    with ledger_of(tmp_path / "state") as ledger:
        recorded = ledger.run(run["run_id"])
        assert recorded.metrics == {"loss": 0.25}
        assert recorded.artifacts == ["artifacts/model.txt"]


def test_job_has_no_network_beyond_its_own_loopback(broker: BrokerHandle, workspace: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=3); print('CONNECTED')\n"
            "except OSError as exc:\n"
            "    print('unreachable', exc.errno)\n"
        )
        run = run_python(broker, workspace, code)
    assert run["state"] == "finished", output(run, "stderr")
    assert output(run).startswith("unreachable")


def test_queued_job_runs_the_workspace_as_submitted_not_as_edited_later(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    sock = broker.env["REMOTE_RUN_SOCKET"]
    (workspace / "exp.py").write_text("print('edited before submit')\n")  # uncommitted edit
    (workspace / "helper.py").write_text("VALUE = 'untracked helper'\n")  # untracked file
    blocker = submit(broker, workspace, ["sleep", "1"], resources={"gpus": 1})
    code = "import helper, runpy; print(helper.VALUE); runpy.run_path('exp.py')"
    queued = submit(broker, workspace, ["python3", "-c", code], resources={"gpus": 1})
    (run,) = call({"op": "status", "run": queued}, sock)["runs"]
    assert run["state"] == "queued"
    (workspace / "exp.py").write_text("print('edited after submit')\n")
    (workspace / "helper.py").write_text("VALUE = 'changed after submit'\n")
    finish(broker, blocker)
    run = finish(broker, queued)
    assert run["state"] == "finished", output(run, "stderr")
    assert output(run) == "untracked helper\nedited before submit\n"

    # Commit + diff: applying the diff to the commit gives the sources it ran. The diff is stored
    # once per submission, outside every run dir (which its job can write).
    with ledger_of(tmp_path / "state") as ledger:
        diff = Path(ledger.run(queued).extra["snapshot_diff"])
    assert diff.parent == tmp_path / "state" / "dispatch" / "groups"
    assert not (Path(run["run_dir"]) / "snapshot.diff").exists()
    clone = tmp_path / "reproduced"
    subprocess.run(["git", "clone", "-q", str(workspace), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", run["git_commit"]], check=True)
    subprocess.run(["git", "-C", str(clone), "apply", str(diff)], check=True)
    assert (clone / "exp.py").read_text() == "print('edited before submit')\n"
    assert (clone / "helper.py").read_text() == "VALUE = 'untracked helper'\n"
    with ledger_of(tmp_path / "state") as ledger:
        recorded = ledger.run(queued)
    assert recorded.git_commit == run["git_commit"]
    assert recorded.diff_hash == run["diff_hash"] and recorded.diff_hash is not None


def test_ignored_data_is_visible_read_only_and_links_out_are_not_followed(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    (workspace / ".gitignore").write_text("data/\noutside\n")
    (workspace / "data").mkdir()
    (workspace / "data" / "train.txt").write_text("tokens")
    secret_dir = tmp_path / "host-private"
    secret_dir.mkdir()
    (secret_dir / "key").write_text("host secret")
    (workspace / "outside").symlink_to(secret_dir)
    code = (
        "print(open('data/train.txt').read())\n"
        "for action in ('write', 'follow'):\n"
        "    try:\n"
        "        if action == 'write':\n"
        "            open('data/train.txt', 'w').write('x')\n"
        "        else:\n"
        "            open('outside/key').read()\n"
        "        print('DID', action)\n"
        "    except OSError as exc:\n"
        "        print('refused', action, exc.errno)\n"
    )
    run = run_python(broker, workspace, code)
    assert run["state"] == "finished", output(run, "stderr")
    assert output(run).splitlines() == ["tokens", "refused write 30", "refused follow 2"]
    assert (workspace / "data" / "train.txt").read_text() == "tokens"


def test_untracked_file_too_large_to_snapshot_is_rejected_with_the_fix(
    broker: BrokerHandle, workspace: Path
) -> None:
    big = workspace / "checkpoint.bin"
    with big.open("wb") as fh:
        fh.truncate(65 << 20)
    answer = call(
        {"op": "submit", "request": {"argv": ["true"], "cwd": str(workspace)}},
        broker.env["REMOTE_RUN_SOCKET"],
    )
    assert answer["ok"] is False and answer["field"] == "workspace"
    assert "checkpoint.bin" in answer["error"] and ".gitignore" in answer["error"]


def test_with_job_sandbox_off_jobs_run_unsandboxed(workspace: Path, tmp_path: Path) -> None:
    settings = make_settings(workspace, tmp_path / "state")
    handle = start_broker(workspace, settings, None, job_sandbox="off")
    try:
        run = run_python(handle, workspace, "open('made_by_job.txt', 'w').write('x')")
    finally:
        handle.stop()
    assert run["state"] == "finished" and run["sandbox"] is None
    assert (workspace / "made_by_job.txt").read_text() == "x"
    with ledger_of(tmp_path / "state") as ledger:  # still recorded for reproduction
        assert Path(ledger.run(run["run_id"]).extra["snapshot_diff"]).is_file()


def test_node_without_bwrap_fails_the_run_with_a_reason(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_bwrap()
    git_only = tmp_path / "git-only-bin"
    git_only.mkdir()
    (git_only / "git").symlink_to(require_binary("git"))
    settings = make_settings(workspace, tmp_path / "state")
    handle = start_broker(workspace, settings, None)
    try:
        # The local runner inherits the broker's PATH: without bwrap on it, the "node" has none.
        monkeypatch.setenv("PATH", str(git_only))
        start = time.monotonic()
        run = finish(handle, submit(handle, workspace, ["/bin/true"]))
    finally:
        handle.stop()
    assert time.monotonic() - start < 30
    assert run["state"] == "failed" and run["exit_code"] == 126
    assert "bwrap is not installed" in run["reason"] and "job_sandbox" in run["reason"]
