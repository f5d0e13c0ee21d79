"""The `agentic-researcher audit` command: formats, output file, exit codes, errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framework.cli import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
CODEX = (
    FIXTURES / "codex" / "rollout-2026-11-21T09-00-00-0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.jsonl"
)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(root)
    return root


def test_json_output_lists_findings_and_fail_on_sets_the_exit_code(workspace: Path) -> None:
    result = CliRunner().invoke(
        app, ["audit", str(CODEX), "--format", "json", "--fail-on", "error"]
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert {f["check"] for f in report["findings"]} >= {"git-history-rewrite"}
    assert report["reader"]["format"] == "codex"


def test_fail_on_above_the_worst_finding_exits_zero(workspace: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(CODEX),
            "--format",
            "json",
            "--disable",
            "git-history-rewrite",
            "--disable",
            "protected-path-modified",
            "--fail-on",
            "error",
        ],
    )
    assert result.exit_code == 0, result.output


def test_html_report_is_written_to_the_out_file(workspace: Path) -> None:
    out = workspace / "audit.html"
    result = CliRunner().invoke(app, ["audit", str(CODEX), "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "git-history-rewrite" in html and 'id="e' in html


def test_text_summary_names_findings_tokens_and_cost(workspace: Path) -> None:
    result = CliRunner().invoke(app, ["audit", str(CODEX)])
    assert result.exit_code == 0
    assert "git-history-rewrite" in result.stdout and "gpt-5-codex" in result.stdout


def test_unknown_target_is_a_clean_error(workspace: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "no-such-session"])
    assert result.exit_code == 2
    assert "neither a file, a directory nor a known session id" in result.output


def test_unknown_check_id_is_a_clean_error(workspace: Path) -> None:
    result = CliRunner().invoke(app, ["audit", str(CODEX), "--disable", "nope"])
    assert result.exit_code == 2 and "unknown check id" in result.output
