"""``agentic-researcher gc`` on the state dir of a real broker (local executor, bwrap jobs):
finished runs' directories and unused snapshots go, everything else stays, no link is followed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from typer.testing import CliRunner

from framework.cli import app
from framework.dispatch.broker import start_broker
from framework.dispatch.client import call
from framework.dispatch.gc import GcError, apply_gc, plan_gc
from tests.integration.test_dispatch_broker import make_settings, make_workspace
from tests.support import require_bwrap


def test_gc_removes_finished_runs_and_unused_snapshots_and_never_follows_a_planted_link(
    tmp_path: Path,
) -> None:
    require_bwrap()
    workspace = make_workspace(tmp_path)
    state = tmp_path / "state"
    outside = tmp_path / "host-data"
    outside.mkdir()
    (outside / "precious").write_text("host file")
    handle = start_broker(workspace, make_settings(workspace, state), "gc-session")
    sock = handle.env["REMOTE_RUN_SOCKET"]
    # The job plants links to a host directory and file in its own run dir.
    plant = (
        "import os; d = os.environ['RUN_DIR']; "
        f"os.symlink({str(outside)!r}, os.path.join(d, 'artifacts', 'link-dir')); "
        f"os.symlink({str(outside / 'precious')!r}, os.path.join(d, 'link-file'))"
    )
    answer = call(
        {"op": "submit", "request": {"argv": ["python3", "-c", plant], "cwd": str(workspace)}},
        sock,
    )
    finished = answer["runs"][0]
    (run,) = call({"op": "wait", "run": finished, "timeout_s": 60}, sock)["runs"]
    assert run["state"] == "finished", run
    (workspace / "exp.py").write_text("import time; time.sleep(300)\n")  # a new snapshot
    answer = call(
        {"op": "submit", "request": {"argv": ["python3", "exp.py"], "cwd": str(workspace)}}, sock
    )
    active = answer["runs"][0]
    try:
        plan_gc(state, 0)
        raise AssertionError("gc ran while the broker serves the state dir")
    except GcError as exc:
        assert "broker is serving" in str(exc)
    deadline = time.monotonic() + 30
    while not (state / "runs" / active / "started.0.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    handle.broker.local.stop()  # keep the active run running past the broker's stop
    handle.stop()
    try:
        env = {"AR_STATE_DIR": str(state), "HOME": str(tmp_path)}
        dry = CliRunner().invoke(app, ["gc", "--older-than", "0", "-w", str(workspace)], env=env)
        assert dry.exit_code == 0, dry.output
        assert "dry run: 2 to remove" in dry.output, dry.output  # the run dir and one snapshot
        assert (state / "runs" / finished).is_dir()

        plan = apply_gc(state, plan_gc(state, 0))
        assert sorted(c.kind for c in plan.candidates) == ["run", "snapshot"]
        assert not (state / "runs" / finished).exists()
        assert (state / "runs" / active).is_dir()  # still running
        assert (outside / "precious").read_text() == "host file"
        snapshots = [p for p in (state / "dispatch" / "snapshots").iterdir() if p.name != "objects"]
        assert len(snapshots) == 1  # the running run's
        assert list((state / "dispatch" / "groups").glob("*.diff"))  # diffs are kept
    finally:
        started = (state / "runs" / active / "started.0.json").read_text()
        os.killpg(int(json.loads(started)["pid"]), 9)
