"""The launcher's steps in the agent's trees (the agent home, the workspace's template overrides)
follow no link the agent planted there, on real files. These steps run on the host before any
sandbox starts, so no runtime is involved; the same plants made by a real session are in
tests/integration/test_launcher_attacks.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framework.agents import get_agent
from framework.config import Settings
from framework.prompts import OVERRIDE_DIR, PromptError, list_templates, render_files
from framework.sandbox.launch import CLIENT_BIN_DIR, prepare_agent_home
from framework.sandbox.runtime import SandboxError
from framework.workspace import find_root

SECRET = "host-secret-5d1c"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host directory outside every tree the agent has, with a secret file in it."""
    private = tmp_path / "host"
    private.mkdir(mode=0o700)
    (private / "secret.txt").write_text(SECRET)
    return private


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "agent-home" / "claude"
    path.mkdir(parents=True)
    return path


def _ids() -> tuple[int, int]:
    return (1000, 1000) if os.getuid() == 0 else (os.getuid(), os.getgid())


def test_preparing_the_agent_home_never_creates_a_file_through_a_planted_link(
    home: Path, host: Path
) -> None:
    (home / ".claude.json").symlink_to(host / "created-by-launch")  # dangling
    prepare_agent_home(get_agent("claude"), home, *_ids())
    assert not (host / "created-by-launch").exists()
    assert (home / ".claude.json").is_symlink(), "the agent's own link is left as it is"


def test_preparing_the_agent_home_refuses_a_linked_state_directory(
    tmp_path: Path, host: Path
) -> None:
    home = tmp_path / "state" / "agent-home" / "opencode"
    home.mkdir(parents=True)
    (home / ".config").symlink_to(host)
    with pytest.raises(SandboxError, match="may have planted a link"):
        prepare_agent_home(get_agent("opencode"), home, *_ids())
    assert sorted(p.name for p in host.iterdir()) == ["secret.txt"]


def test_the_login_profile_is_never_read_or_written_through_a_planted_link(
    home: Path, host: Path
) -> None:
    (home / ".profile").symlink_to(host / "secret.txt")
    prepare_agent_home(get_agent("claude"), home, *_ids())
    assert (host / "secret.txt").read_text() == SECRET
    profile = home / ".profile"
    assert not profile.is_symlink() and SECRET not in profile.read_text()
    assert str(CLIENT_BIN_DIR) in profile.read_text()


@pytest.mark.skipif(os.getuid() != 0, reason="re-owning files needs root")
def test_the_agent_home_is_chowned_by_descriptor_never_through_a_link(
    home: Path, host: Path
) -> None:
    (home / ".claude").mkdir()
    (home / ".claude" / "secret").symlink_to(host / "secret.txt")
    (home / ".claude" / "up").symlink_to(host)
    prepare_agent_home(get_agent("claude"), home, 1000, 1000)
    assert (host / "secret.txt").stat().st_uid == 0 and host.stat().st_uid == 0
    assert (home / ".claude" / "secret").lstat().st_uid == 1000
    assert (home / ".claude.json").stat().st_uid == 1000


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / OVERRIDE_DIR).mkdir(parents=True)
    return root


def test_a_template_override_planted_as_a_link_never_renders_a_host_file(
    workspace: Path, host: Path
) -> None:
    (workspace / OVERRIDE_DIR / "rules.md.j2").symlink_to(host / "secret.txt")
    with pytest.raises(PromptError, match="not regular files"):
        render_files(Settings(), "claude", workspace)
    with pytest.raises(PromptError, match="not regular files"):
        list_templates(workspace)


def test_a_linked_override_directory_is_never_listed_or_read(workspace: Path, host: Path) -> None:
    (workspace / OVERRIDE_DIR).rmdir()
    (host / "rules.md.j2").write_text(SECRET)
    (workspace / OVERRIDE_DIR).symlink_to(host)
    with pytest.raises(PromptError, match="cannot be read safely"):
        render_files(Settings(), "claude", workspace)


def test_a_template_override_cannot_run_code_on_the_host(workspace: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran-on-the-host"
    payload = f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}\n"
    (workspace / OVERRIDE_DIR / "rules.md.j2").write_text(payload)
    with pytest.raises(PromptError, match="templates are sandboxed"):
        render_files(Settings(), "claude", workspace)
    assert not marker.exists()


def test_the_workspace_root_is_found_without_following_a_planted_marker_link(
    tmp_path: Path, host: Path
) -> None:
    outer = tmp_path / "outer"
    inner = outer / "project" / "sub"
    inner.mkdir(parents=True)
    (outer / ".git").mkdir()
    (host / ".agentic-researcher").mkdir()
    (outer / "project" / ".agentic-researcher").symlink_to(host / ".agentic-researcher")
    assert find_root(inner) == outer, "a linked marker directory is not a marker"
