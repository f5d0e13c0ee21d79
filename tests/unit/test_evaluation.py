"""The evaluation captured at launch: hashed, copied pristine, compared, mounted into jobs, audited.

The real-sandbox attacks (rename an ancestor, edit the judge between launch and submit) are in
tests/integration/test_evaluation_attacks.py; these pin the logic on real files, git and SQLite.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from framework import safefs
from framework.audit.checks import AuditConfig, CheckContext, Checker, Severity
from framework.audit.ledger import LedgerRuns
from framework.config import ResearchSettings, Settings
from framework.dispatch.jobsandbox import sandbox_plan, write_identity_files
from framework.dispatch.snapshot import take_snapshot
from framework.evaluation import (
    Evaluation,
    EvaluationError,
    capture,
    digest,
    divergence,
    divergence_payload,
    pin_session,
    scan,
    session_evaluation,
)
from framework.ledger import EventKind, open_ledger
from framework.workspace import Workspace

PROTECTED = ["eval/", "tests/data/", ".git/hooks/", ".git/config", ".agentic-researcher/"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "eval").mkdir(parents=True)
    (ws / "eval" / "score.py").write_text("print('honest')\n")
    (ws / "eval" / "run.sh").write_text("#!/bin/sh\n")
    (ws / "eval" / "run.sh").chmod(0o700)
    (ws / "tests" / "data").mkdir(parents=True)
    (ws / "tests" / "data" / "labels.csv").write_text("id,label\n")
    (ws / "train.py").write_text("print('train')\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    return ws


def test_capture_keeps_a_pristine_copy_of_exactly_what_it_hashed(
    workspace: Path, tmp_path: Path
) -> None:
    store = tmp_path / "state" / "evaluation"
    evaluation = capture(workspace, PROTECTED, store)
    assert evaluation.root == store / evaluation.sha256
    copy = evaluation.source("eval/score.py")
    assert copy.read_text() == "print('honest')\n"
    assert (evaluation.source("eval/run.sh").stat().st_mode & 0o777) == 0o755  # readable to jobs
    assert evaluation.entries[".agentic-researcher"].kind == "absent"
    assert evaluation.sha256 == digest(scan(workspace, PROTECTED))
    again = capture(workspace, PROTECTED, store)
    assert again.sha256 == evaluation.sha256
    assert [p.name for p in store.iterdir()] == [evaluation.sha256], "content-addressed: once"


@pytest.mark.parametrize("where", ["eval", "eval/score.py", "tests"])
def test_capture_refuses_a_link_at_or_above_a_protected_path(
    workspace: Path, tmp_path: Path, where: str
) -> None:
    target = workspace / where
    os.rename(target, tmp_path / "moved")
    target.symlink_to(tmp_path / "moved")
    with pytest.raises(EvaluationError, match="symbolic link"):
        capture(workspace, PROTECTED, tmp_path / "store")
    assert not any((tmp_path / "store").glob("[0-9a-f]*")), "nothing kept of a refused capture"


def test_divergence_names_every_edit_replacement_removal_and_creation(
    workspace: Path, tmp_path: Path
) -> None:
    evaluation = capture(workspace, PROTECTED, tmp_path / "store")
    (workspace / "eval" / "score.py").write_text("print('forged')\n")
    os.rename(workspace / "tests" / "data", workspace / "tests" / "data.orig")
    (workspace / "tests" / "data").symlink_to("data.orig")
    (workspace / ".agentic-researcher").mkdir()
    changes = dict(divergence(evaluation, scan(workspace, PROTECTED)))
    assert changes == {
        "eval/score.py": "edited",
        "tests/data": "replaced by a symbolic link or special file",
        "tests/data/labels.csv": "removed or renamed away",
        ".agentic-researcher": "created",
    }
    payload = divergence_payload(evaluation, scan(workspace, PROTECTED), "submit")
    assert payload is not None and payload["changes_total"] == 4
    assert payload["evaluation_sha256"] == evaluation.sha256 != payload["current_sha256"]


def test_a_pinned_session_evaluation_is_read_back_and_checked(
    workspace: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    evaluation = capture(workspace, PROTECTED, store)
    pin_session(store, "s-1", evaluation)
    assert session_evaluation(store, "s-1") == evaluation
    assert session_evaluation(store, "s-unknown") is None
    assert session_evaluation(store, "../s-1") is None


def test_walk_never_follows_a_link_and_hands_out_what_it_opened(tmp_path: Path) -> None:
    (tmp_path / "root" / "d").mkdir(parents=True)
    (tmp_path / "root" / "d" / "f").write_text("x")
    (tmp_path / "secret").write_text("host secret")
    (tmp_path / "root" / "d" / "link").symlink_to(tmp_path / "secret")
    (tmp_path / "root" / "dirlink").symlink_to(tmp_path)
    seen = {
        name: (os.read(fd, 100) if fd is not None else None)
        for name, _, fd in safefs.walk(tmp_path / "root")
    }
    assert seen == {"d": None, "d/f": b"x", "d/link": None, "dirlink": None}


def _plan(workspace: Path, tmp_path: Path, evaluation: Evaluation) -> dict[str, Any]:
    settings = Settings(state_dir=tmp_path / "state", research=ResearchSettings())
    snapshot = take_snapshot(workspace, tmp_path / "snapshots")
    etc = write_identity_files(tmp_path / "etc")
    return sandbox_plan(settings, workspace, workspace, snapshot, 1, etc, evaluation=evaluation)


def _binds(template: list[str]) -> dict[str, str]:
    """target -> source of every read-only bind in a bwrap command line."""
    return {
        template[i + 2]: template[i + 1]
        for i, arg in enumerate(template)
        if arg == "--ro-bind" and i + 2 < len(template)
    }


def test_jobs_mount_the_pristine_copy_over_the_snapshot_and_hide_what_was_created(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / ".gitignore").write_text("tests/data/\n")  # ignored: the live dir is not mounted
    evaluation = capture(workspace, PROTECTED, tmp_path / "state" / "evaluation")
    (workspace / "eval" / "score.py").write_text("print('forged')\n")
    (workspace / ".agentic-researcher").mkdir()
    (workspace / ".agentic-researcher" / "judge.py").write_text("forged")
    binds = _binds(_plan(workspace, tmp_path, evaluation)["template"])
    assert binds[str(workspace / "eval")] == str(evaluation.source("eval"))
    assert binds[str(workspace / "tests/data")] == str(evaluation.source("tests/data"))
    assert binds[str(workspace / ".agentic-researcher")] == str(evaluation.placeholder(True))
    assert str(workspace / "tests" / "data") not in binds.values(), "never the live test data"
    assert not any(".git" in target for target in binds), "a snapshot holds no .git"


def test_audit_reports_a_recorded_divergence_as_an_error(workspace: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    evaluation = capture(workspace, PROTECTED, tmp_path / "store")
    (workspace / "eval" / "score.py").write_text("print('forged')\n")
    payload = divergence_payload(evaluation, scan(workspace, PROTECTED), "session_end")
    with open_ledger(url) as ledger:
        ledger.append(EventKind.evaluation_diverged, session_id="s-1", payload=payload)
        ledger.append(EventKind.evaluation_diverged, session_id="s-other", payload=payload)
    ctx = CheckContext(
        config=AuditConfig(),
        workspace=Workspace(root=workspace, settings=Settings(state_dir=tmp_path / "state")),
        session_id="s-1",
        divergences=LedgerRuns(url),
    )
    checker = Checker(ctx)
    found = [f for f in checker.finish() if f.check == "evaluation-diverged"]
    assert len(found) == 1
    assert found[0].severity is Severity.ERROR
    assert "'eval/score.py' edited" in found[0].message and "session end" in found[0].message
