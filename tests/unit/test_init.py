"""`agentic-researcher init`: sets up a research repo, is idempotent, never loses user edits."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framework.cli import app
from framework.init import GITIGNORE_ENTRIES, MANIFEST_PATH, InitError, init_workspace


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user config, no AR_* variables and a git identity-free HOME from the developer's machine."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".state"))
    for name in list(os.environ):
        if name.startswith("AR_"):
            monkeypatch.delenv(name)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Content and modification time of every file outside .git."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def actions(report_lines: list[str]) -> dict[str, str]:
    """{path: action} from the report lines (skipping the workspace and git header lines)."""
    out = {}
    for line in report_lines[2:]:
        action, path = line.split()[:2]
        out[path] = action
    return out


def test_init_creates_repo_config_prompts_skeletons_and_gitignore(tmp_path: Path) -> None:
    root = tmp_path / "new" / "project"
    report = init_workspace(root, tool="claude", force=False)
    assert (root / ".git").is_dir(), "git init must run in a directory that is not a repository"
    assert "initialised" in report.git
    for relative in (
        ".agentic-researcher/config.toml",
        "CLAUDE.md",
        ".claude/commands/research-plan.md",
        "report.tex",
        "TODO.md",
        ".gitignore",
    ):
        assert (root / relative).is_file(), relative
    assert "\\begin{document}" in (root / "report.tex").read_text()
    assert "/research-plan" in (root / "TODO.md").read_text()
    gitignore = (root / ".gitignore").read_text().splitlines()
    assert all(entry in gitignore for entry in GITIGNORE_ENTRIES)
    assert set(actions(report.lines()).values()) == {"created"}


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    init_workspace(tmp_path, tool="codex", force=False)
    before = snapshot(tmp_path)
    report = init_workspace(tmp_path, tool="codex", force=False)
    assert snapshot(tmp_path) == before
    assert set(actions(report.lines()).values()) == {"unchanged"}
    assert report.git == "existing repository"


def test_edited_file_is_kept_and_reported_without_force(tmp_path: Path) -> None:
    init_workspace(tmp_path, tool="gemini", force=False)
    edited = (tmp_path / "GEMINI.md").read_text() + "\nOur lab also requires X.\n"
    (tmp_path / "GEMINI.md").write_text(edited)
    report = init_workspace(tmp_path, tool="gemini", force=False)
    assert (tmp_path / "GEMINI.md").read_text() == edited
    assert report.kept == ["GEMINI.md"]
    assert any("GEMINI.md" in line and "--force" in line for line in report.lines())


def test_force_overwrites_edited_generated_files(tmp_path: Path) -> None:
    init_workspace(tmp_path, tool="gemini", force=False)
    pristine = (tmp_path / "GEMINI.md").read_text()
    (tmp_path / "GEMINI.md").write_text("edited\n")
    report = init_workspace(tmp_path, tool="gemini", force=True)
    assert (tmp_path / "GEMINI.md").read_text() == pristine
    assert actions(report.lines())["GEMINI.md"] == "overwrote"
    assert init_workspace(tmp_path, tool="gemini", force=False).kept == []


def test_force_never_replaces_report_or_todo(tmp_path: Path) -> None:
    init_workspace(tmp_path, tool="claude", force=False)
    (tmp_path / "report.tex").write_text("my findings\n")
    (tmp_path / "TODO.md").write_text("my plan\n")
    report = init_workspace(tmp_path, tool="claude", force=True)
    assert (tmp_path / "report.tex").read_text() == "my findings\n"
    assert (tmp_path / "TODO.md").read_text() == "my plan\n"
    assert sorted(report.kept) == ["TODO.md", "report.tex"]


def test_files_that_existed_before_init_are_kept(tmp_path: Path) -> None:
    (tmp_path / "CLAUDE.md").write_text("hand-written instructions\n")
    report = init_workspace(tmp_path, tool="claude", force=False)
    assert (tmp_path / "CLAUDE.md").read_text() == "hand-written instructions\n"
    assert report.kept == ["CLAUDE.md"]


def test_unedited_generated_file_follows_settings_changes(tmp_path: Path) -> None:
    init_workspace(tmp_path, tool="claude", force=False)
    config = tmp_path / ".agentic-researcher" / "config.toml"
    config.write_text('[research]\ntime_budget_hours = 3\nmodules = ["math"]\n')
    report = init_workspace(tmp_path, tool="claude", force=False)
    assert actions(report.lines())["CLAUDE.md"] == "updated"
    assert "3 hours" in (tmp_path / "CLAUDE.md").read_text()
    assert report.kept == [".agentic-researcher/config.toml"], "the edited config itself is kept"


def test_gitignore_entries_are_merged_without_dropping_user_lines(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("secrets.env\n.venv/")
    init_workspace(tmp_path, tool="claude", force=False)
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["secrets.env", ".venv/"]
    assert lines.count(".venv/") == 1
    assert all(entry in lines for entry in GITIGNORE_ENTRIES)


def test_init_inside_an_existing_repository_does_not_nest_a_new_one(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    sub = tmp_path / "study"
    report = init_workspace(sub, tool="claude", force=False)
    assert not (sub / ".git").exists()
    assert str(tmp_path) in report.git


def test_tool_defaults_to_the_configured_agent(tmp_path: Path) -> None:
    (tmp_path / ".agentic-researcher").mkdir()
    (tmp_path / ".agentic-researcher" / "config.toml").write_text('[agent]\ntool = "opencode"\n')
    init_workspace(tmp_path, tool=None, force=False)
    assert (tmp_path / ".opencode" / "commands" / "retrospective.md").is_file()
    assert not (tmp_path / "CLAUDE.md").exists()


def test_unknown_tool_is_rejected_before_anything_is_written(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with pytest.raises(InitError, match="unknown tool 'cursor'"):
        init_workspace(root, tool="cursor", force=False)
    assert not root.exists()


def test_path_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InitError, match="not a directory"):
        init_workspace(target, tool="claude", force=False)


def test_corrupt_manifest_is_an_actionable_error(tmp_path: Path) -> None:
    init_workspace(tmp_path, tool="claude", force=False)
    (tmp_path / MANIFEST_PATH).write_text("{not json")
    with pytest.raises(InitError, match="delete it and rerun"):
        init_workspace(tmp_path, tool="claude", force=False)


def test_planted_directory_symlink_cannot_redirect_writes(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "ws"
    root.mkdir()
    (root / ".claude").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InitError, match="outside"):
        init_workspace(root, tool="claude", force=True)
    assert list(outside.iterdir()) == []


def test_cli_init_reports_created_then_kept(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["init", str(tmp_path), "--tool", "claude"])
    assert first.exit_code == 0, first.output
    assert "created    CLAUDE.md" in first.output
    (tmp_path / "CLAUDE.md").write_text("mine\n")
    second = runner.invoke(app, ["init", str(tmp_path), "--tool", "claude"])
    assert second.exit_code == 0, second.output
    assert "kept       CLAUDE.md" in second.output
    assert (tmp_path / "CLAUDE.md").read_text() == "mine\n"


def test_cli_init_with_unknown_tool_exits_2_with_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path / "x"), "--tool", "nope"])
    assert result.exit_code == 2
    assert "unknown tool 'nope'" in result.output


def test_sync_methodology_refreshes_unedited_files_and_keeps_edited_ones(tmp_path: Path) -> None:
    from framework.config import ResearchSettings, Settings
    from framework.init import sync_methodology

    init_workspace(tmp_path, tool="claude", force=False)
    (tmp_path / ".claude" / "commands" / "retrospective.md").write_text("our own retrospective\n")
    settings = Settings(research=ResearchSettings(time_budget_hours=5))
    report = sync_methodology(tmp_path, settings, "claude")
    assert "5 hours" in (tmp_path / "CLAUDE.md").read_text()
    assert (
        tmp_path / ".claude" / "commands" / "retrospective.md"
    ).read_text() == "our own retrospective\n"
    assert report.kept == [".claude/commands/retrospective.md"]
