"""The main job: `python -m framework.demo` completes a whole session on a fresh directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework.demo import main
from tests.support import require_binary, require_bwrap

pytestmark = [pytest.mark.agent_cli, pytest.mark.bwrap]


def test_demo_runs_a_session_and_writes_report_ledger_and_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_bwrap()
    require_binary("claude", "agent CLIs (Claude Code)")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "unused"))
    assert main(["--dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    repo = tmp_path / "demo" / "repo"
    metrics = json.loads((repo / "runs" / "fw" / "metrics.json").read_text())
    report = (repo / "report.tex").read_text()
    assert f"the loss is {metrics['loss']}" in report
    assert report.index("\\section{Frank-Wolfe}") < report.index("\\end{document}")
    assert "<html" in (tmp_path / "demo" / "audit.html").read_text().lower()
    assert f"duality gap {metrics['final_gap']}" in out and "audit findings: 0" in out


def test_demo_refuses_to_overwrite_an_existing_repo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_bwrap()
    require_binary("claude", "agent CLIs (Claude Code)")
    (tmp_path / "demo" / "repo").mkdir(parents=True)
    assert main(["--dir", str(tmp_path / "demo")]) == 2
    assert "exists; remove it or pass --dir" in capsys.readouterr().err
