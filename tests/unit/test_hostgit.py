"""Host git's pure parts: HEAD read as data, and the config reader of the session-end check."""

from __future__ import annotations

import os
from pathlib import Path

from framework.gitplanted import config_entries
from framework.hostgit import read_head

A = "a" * 40
B = "b" * 40


def _git_dir(tmp_path: Path, head: str) -> Path:
    (tmp_path / ".git" / "refs" / "heads").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text(head)
    return tmp_path


def test_head_is_read_from_a_loose_ref_then_packed_refs(tmp_path: Path) -> None:
    repo = _git_dir(tmp_path, "ref: refs/heads/main\n")
    assert read_head(repo) is None  # unborn branch
    (repo / ".git" / "packed-refs").write_text(f"# pack-refs with: peeled\n{B} refs/heads/main\n")
    assert read_head(repo) == B
    (repo / ".git" / "refs" / "heads" / "main").write_text(A + "\n")
    assert read_head(repo) == A


def test_head_never_follows_a_link_or_a_name_that_leaves_the_refs(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text(A + "\n")
    repo = _git_dir(tmp_path / "repo", "ref: refs/heads/main\n")
    os.symlink(outside, repo / ".git" / "refs" / "heads" / "main")
    assert read_head(repo) is None
    (repo / ".git" / "HEAD").write_text("ref: refs/../../outside\n")
    assert read_head(repo) is None
    (repo / ".git" / "HEAD").write_text("ref: /etc/passwd\n")
    assert read_head(repo) is None
    (repo / ".git" / "HEAD").write_text(f"{B}\n")
    assert read_head(repo) == B


def test_config_entries_find_every_key_whatever_the_spelling() -> None:
    text = (
        "[core]\n\tFSMonitor = /x ; c\n"
        '[filter "Evil"] clean = cat\n'
        "[diff.old]\n\ttextconv = a \\\n\tcontinued = no\n"
        "# [alias] x = y\n"
        '[includeIf "gitdir:/"]\n\tpath = p\n'
    )
    assert [k for k, _ in config_entries(text)] == [
        "core.fsmonitor",
        "filter.Evil.clean",
        "diff.old.textconv",
        "includeif.gitdir:/.path",
    ]
