"""Before each session the launcher refreshes the methodology without losing the user's edits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framework.config import load_settings
from framework.init import init_workspace
from framework.sandbox.launch import _render
from framework.sandbox.runtime import SandboxError


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


def host_file(tmp_path: Path) -> Path:
    private = tmp_path / "host-private"
    private.mkdir(mode=0o700, exist_ok=True)
    secret = private / "secret.txt"
    secret.write_text("root-only host text\n")
    return secret


def test_claude_md_rewrite_never_writes_through_a_link_at_a_guessable_temp_name(
    tmp_path: Path, isolated_env: None
) -> None:
    repo = tmp_path / "repo"
    init_workspace(repo, tool="claude", force=False)
    secret = host_file(tmp_path)
    (repo / "CLAUDE.md").unlink()  # the launcher restores it: a rewrite of the agent's tree
    # The old temporary name was .CLAUDE.md.tmp-<pid>; the agent learns pids from started.json.
    (repo / f".CLAUDE.md.tmp-{os.getpid()}").symlink_to(secret)
    settings = load_settings(workspace=repo).settings
    _render(settings, "claude", repo, tmp_path / "agent-home", (0, 0))
    assert secret.read_text() == "root-only host text\n"
    assert "ten rules" in (repo / "CLAUDE.md").read_text().lower()


def test_claude_md_planted_as_a_link_is_neither_read_nor_written_through(
    tmp_path: Path, isolated_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    init_workspace(repo, tool="claude", force=False)
    secret = host_file(tmp_path)
    (repo / "CLAUDE.md").unlink()
    (repo / "CLAUDE.md").symlink_to(secret)
    settings = load_settings(workspace=repo).settings
    _render(settings, "claude", repo, tmp_path / "agent-home", (0, 0))
    assert secret.read_text() == "root-only host text\n"
    assert (repo / "CLAUDE.md").is_symlink()  # kept, as content that is not init's
    assert "kept your edited CLAUDE.md" in capsys.readouterr().err


def test_codex_prompt_copy_never_reads_a_host_file_through_a_planted_link(
    tmp_path: Path, isolated_env: None
) -> None:
    repo = tmp_path / "repo"
    init_workspace(repo, tool="codex", force=False)
    secret = host_file(tmp_path)
    (repo / ".codex" / "prompts" / "steal.md").symlink_to(secret)
    home = tmp_path / "agent-home"
    settings = load_settings(workspace=repo, flags={"agent": {"tool": "codex"}}).settings
    _render(settings, "codex", repo, home, (0, 0))
    copied = home / ".codex" / "prompts"
    assert not (copied / "steal.md").exists()
    assert all("root-only" not in p.read_text() for p in copied.glob("*.md"))


def test_codex_prompt_copy_never_writes_to_a_host_dir_through_a_planted_link(
    tmp_path: Path, isolated_env: None
) -> None:
    repo = tmp_path / "repo"
    init_workspace(repo, tool="codex", force=False)
    secret = host_file(tmp_path)
    home = tmp_path / "agent-home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "prompts").symlink_to(secret.parent)  # planted by the agent last session
    settings = load_settings(workspace=repo, flags={"agent": {"tool": "codex"}}).settings
    with pytest.raises(SandboxError, match="remove the link"):
        _render(settings, "codex", repo, home, (0, 0))
    assert sorted(p.name for p in secret.parent.iterdir()) == ["secret.txt"]
