"""The session's git state on a real repository: untracked work counts as uncommitted."""

from __future__ import annotations

import subprocess
from pathlib import Path

from framework.workspace import git_state


def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (root / ".gitignore").write_text("data/\n")
    (root / "exp.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    return root


def test_a_clean_repository_is_not_dirty_and_ignored_files_do_not_count(tmp_path: Path) -> None:
    root = repo(tmp_path)
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"x" * 1000)
    state = git_state(root)
    assert state.commit is not None and not state.dirty and state.diff_sha256 is None


def test_an_untracked_file_makes_the_state_dirty_and_its_content_moves_the_hash(
    tmp_path: Path,
) -> None:
    root = repo(tmp_path)
    (root / "new_experiment.py").write_text("print('a')\n")
    first = git_state(root)
    assert first.dirty and first.diff_sha256 is not None
    (root / "new_experiment.py").write_text("print('b')\n")
    second = git_state(root)
    assert second.dirty and second.diff_sha256 not in (None, first.diff_sha256)
    (root / "new_experiment.py").unlink()
    (root / "exp.py").write_text("print(2)\n")  # a tracked edit alone: dirty as before
    tracked = git_state(root)
    assert tracked.dirty and tracked.diff_sha256 not in (first.diff_sha256, second.diff_sha256)
