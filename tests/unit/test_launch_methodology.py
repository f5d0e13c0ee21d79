"""Before each session the launcher refreshes the methodology without losing the user's edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.config import load_settings
from framework.init import init_workspace
from framework.sandbox.launch import _render


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_launch_keeps_an_edited_instruction_file(
    tmp_path: Path, isolated_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    init_workspace(repo, tool="claude", force=False)
    edited = "# my own rules\n"
    (repo / "CLAUDE.md").write_text(edited)
    settings = load_settings(workspace=repo).settings
    _render(settings, "claude", repo, tmp_path / "agent-home", (0, 0))
    assert (repo / "CLAUDE.md").read_text() == edited
    assert "kept your edited CLAUDE.md" in capsys.readouterr().err


def test_launch_restores_a_deleted_instruction_file(tmp_path: Path, isolated_env: None) -> None:
    repo = tmp_path / "repo"
    init_workspace(repo, tool="claude", force=False)
    (repo / "CLAUDE.md").unlink()
    settings = load_settings(workspace=repo).settings
    _render(settings, "claude", repo, tmp_path / "agent-home", (0, 0))
    assert "ten rules" in (repo / "CLAUDE.md").read_text().lower()


def test_codex_prompts_reach_codex_home(tmp_path: Path, isolated_env: None) -> None:
    repo = tmp_path / "repo"
    init_workspace(repo, tool="codex", force=False)
    home = tmp_path / "agent-home"
    settings = load_settings(workspace=repo, flags={"agent": {"tool": "codex"}}).settings
    _render(settings, "codex", repo, home, (0, 0))
    rendered = sorted(p.name for p in (repo / ".codex" / "prompts").glob("*.md"))
    copied = sorted(p.name for p in (home / ".codex" / "prompts").glob("*.md"))
    assert rendered and copied == rendered
