"""Evaluation protected by construction, attacked in real bubblewrap and Docker sandboxes.

Property 3 of docs/security.md: a protected path cannot be moved away with an ancestor and
replaced, and jobs run the pristine copy of the protected paths taken at launch, whatever happens
to the workspace's; a divergence is recorded in the ledger and reported by the audit as an error.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path

import pytest

from framework.audit.checks import AuditConfig, CheckContext, Checker, Severity
from framework.audit.ledger import LedgerRuns
from framework.config import ClusterSettings, ResearchSettings, SandboxSettings, Settings
from framework.ledger import EventKind, open_ledger
from framework.sandbox.launch import LaunchRequest, launch
from framework.sandbox.store import SessionStore
from framework.workspace import Workspace
from tests.integration import test_sandbox_attacks as attacks
from tests.integration.test_sandbox_attacks import IMAGE, PROTECTED, attack

runtime = attacks.runtime  # the same fixtures: real bwrap and real Docker, same workspace
workspace = attacks.workspace

pytestmark = pytest.mark.slow


def test_protected_paths_cannot_be_moved_away_with_an_ancestor(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    before = {p: (workspace / p).read_bytes() for p in ("eval/score.py", "tests/data/labels.csv")}
    config = (workspace / ".git" / "config").read_bytes()
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        f"""
import json, os, subprocess
ws = {str(workspace)!r}
os.chdir(ws)
def moved(old, new):
    try:
        os.rename(old, new)
    except OSError as exc:
        return exc.errno
    # it moved: recreate the protected path with the attacker's content, as the attack would
    os.makedirs(old + "/data", exist_ok=True)
    return "moved"
renames = {{old: moved(old, new) for old, new in
           (("tests", "tests.orig"), (".git", ".git.orig"), ("eval", "eval2"))}}
def wrote(path, data="ok"):
    try:
        with open(path, "w") as fh:
            fh.write(data)
        return True
    except OSError:
        return False
commit = subprocess.run(
    ["git", "-c", "user.email=a@b", "-c", "user.name=a", "-c", "safe.directory=*",
     "commit", "-q", "--allow-empty", "-m", "agent commit"], capture_output=True, text=True)
print(json.dumps({{
    "renames": renames,
    "beside": {{p: wrote(p) for p in ("tests/test_new.py", "tests/conftest.py", "notes.md")}},
    "commit": [commit.returncode, commit.stderr[-300:]],
}}))
""",
    )
    assert seen["renames"] == {"tests": 16, ".git": 16, "eval": 16}, "EBUSY: mount points"
    assert all(seen["beside"].values()), seen["beside"]
    assert seen["commit"][0] == 0, seen["commit"]  # .git/objects, refs and the index still work
    assert not any((workspace / p).exists() for p in ("tests.orig", ".git.orig", "eval2"))
    for rel, data in before.items():
        assert (workspace / rel).read_bytes() == data
    assert (workspace / ".git" / "config").read_bytes() == config
    assert (workspace / "tests" / "test_new.py").read_text() == "ok"


SUBMIT_AFTER_THE_EDIT = """
set -e
touch {ws}/.launched
while [ ! -e {ws}/.edited ]; do sleep 0.1; done
remote-run --wait -- python3 eval/score.py
"""


def test_jobs_run_the_pristine_evaluation_and_the_divergence_is_recorded_and_audited(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    """The judge is edited on the host between launch and submit (as any way round the read-only
    mount would): the job still runs the copy taken at launch, the run records that copy's hash,
    and the edit is in the ledger and in the audit as an error."""
    settings = Settings(
        state_dir=tmp_path / "state",
        sandbox=SandboxSettings(runtime=runtime, image=IMAGE, network="none"),  # type: ignore[arg-type]
        research=ResearchSettings(protected_paths=PROTECTED),
        cluster=ClusterSettings(job_runtime=runtime),  # type: ignore[arg-type]
    )
    score = workspace / "eval" / "score.py"

    def edit_on_the_host() -> None:
        deadline = time.monotonic() + 120
        while not (workspace / ".launched").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        score.write_text("print('forged score')\n")
        (workspace / ".edited").touch()

    editor = threading.Thread(target=edit_on_the_host, daemon=True)
    editor.start()
    record = launch(
        LaunchRequest(
            workspace=workspace,
            runtime=runtime,  # type: ignore[arg-type]
            command=["sh", "-c", textwrap.dedent(SUBMIT_AFTER_THE_EDIT).format(ws=workspace)],
            settings=settings,
            broker=True,
            record_in_ledger=True,
            capture_output=True,
        )
    )
    editor.join(timeout=5)
    session_dir = SessionStore(tmp_path / "state" / "sessions").path(record.id)
    output = (session_dir / "stdout.txt").read_text() + (session_dir / "stderr.txt").read_text()
    assert record.exit_code == 0, output
    assert score.read_text() == "print('forged score')\n"

    with open_ledger(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}") as ledger:
        (submitted,) = ledger.events(kind=EventKind.run_submitted)
        run = ledger.run(str(submitted.run_id))
        diverged = ledger.events(session_id=record.id, kind=EventKind.evaluation_diverged)
    assert record.evaluation_sha256 is not None
    assert submitted.payload["extra"]["evaluation_sha256"] == record.evaluation_sha256
    assert run.state.value == "finished", run
    assert Path(str(run.run_dir), "stdout.log").read_text() == "honest score\n"
    assert [e.payload["when"] for e in diverged] == ["submit", "session_end"]
    for event in diverged:
        assert event.payload["changes"] == [{"path": "eval/score.py", "change": "edited"}]
        assert event.payload["evaluation_sha256"] == record.evaluation_sha256
    assert any("evaluation diverged" in note for note in record.notes)

    ctx = CheckContext(
        config=AuditConfig(protected_paths=PROTECTED),
        workspace=Workspace(root=workspace, settings=settings),
        session_id=record.id,
        divergences=LedgerRuns(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}"),
    )
    findings = [f for f in Checker(ctx).finish() if f.check == "evaluation-diverged"]
    assert len(findings) == 2, findings
    assert all(f.severity is Severity.ERROR for f in findings)
    assert "'eval/score.py' edited" in findings[0].message
    assert json.dumps(findings[0].evidence)
