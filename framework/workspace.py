"""The research repository on the host: its root, git state, protected paths and state dirs."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from framework import hostgit, safefs
from framework.config import WORKSPACE_DIR_NAME, Settings


class WorkspaceError(RuntimeError):
    """The workspace is missing or not usable; the message says what to do."""


def find_root(start: Path | None = None) -> Path:
    """The enclosing git work tree, or ``start`` itself when it is not in a repository. The
    markers are looked at without following links: a workspace's names are the agent's, and a
    planted ``.git`` link must not make the host look at what it points to."""
    here = (start or Path.cwd()).resolve()
    if not here.is_dir():  # host-path: the directory the user named (resolved, no link)
        raise WorkspaceError(f"workspace {here} is not a directory")
    for candidate in (here, *here.parents):
        if _entry(candidate, ".git") is not None:
            return candidate
        marker = _entry(candidate, WORKSPACE_DIR_NAME)
        if marker is not None and stat.S_ISDIR(marker.st_mode):
            return candidate
    return here


def _entry(directory: Path, name: str) -> os.stat_result | None:
    try:
        return safefs.stat_beneath(directory, name)
    except OSError:  # unreadable, or not a directory after all: no marker here
        return None


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool
    diff_sha256: str | None


def git_state(root: Path) -> GitState:
    """Commit, whether anything is uncommitted, and a hash of what is: the diff of tracked files
    and the untracked files that are not ignored (a new script the agent never committed is
    uncommitted work too), by path and content.

    Read through :func:`framework.hostgit.content_view`: in a sandbox, with none of the agent's git
    configuration, from the files' contents and not from the agent's ``.git/index`` (whose stat
    cache and assume-unchanged bits could hide an edit). Raises
    :class:`~framework.hostgit.HostGitError` when git cannot run confined (bubblewrap missing)."""
    if safefs.stat_beneath(root, ".git") is None:
        return GitState(commit=None, dirty=False, diff_sha256=None)
    digest = hashlib.sha256()
    try:
        with hostgit.content_view(root) as view:
            # The view's index is HEAD's tree without stat data: the diff compares contents. It
            # is hashed as it streams, so no size bound is needed (the timeout still holds).
            with view.stream(
                "diff", "--binary", "--no-ext-diff", "--no-textconv", limit=1 << 40
            ) as diff:
                while chunk := diff.read(1 << 16):
                    digest.update(chunk)
            changed = diff.size > 0
            listing = view.run("ls-files", "-z", "--others", "--exclude-standard").checked(
                "git ls-files"
            )
    except hostgit.UnreadableHead as exc:
        # HEAD names a commit whose objects are not in .git/objects (moved behind a planted
        # indirection): something is uncommitted, with nothing to hash it by.
        return GitState(commit=exc.commit, dirty=True, diff_sha256=None)
    untracked = sorted(p for p in listing.split(b"\0") if p)
    if not changed and not untracked:
        return GitState(commit=view.commit, dirty=False, diff_sha256=None)
    for path in untracked:
        digest.update(b"\0untracked\0" + path + b"\0" + _content_id(root, os.fsdecode(path)))
    return GitState(commit=view.commit, dirty=True, diff_sha256=digest.hexdigest())


HASHED_UNTRACKED_BYTES = 64 << 20
"""Untracked files up to this size are identified by content; larger ones by size and mtime."""


def _content_id(root: Path, relative: str) -> bytes:
    """Content hash of an untracked file, reached without following any link (a link is identified
    by its own mode, size and time, like a file over the size limit)."""
    try:
        info = safefs.stat_beneath(root, relative)
        if info is None:
            return b"gone"
        if not stat.S_ISREG(info.st_mode) or info.st_size > HASHED_UNTRACKED_BYTES:
            return f"{info.st_mode:o} {info.st_size} {info.st_mtime_ns}".encode()
        with os.fdopen(safefs.open_file(root, relative), "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest().encode()
    except OSError as exc:
        return f"unreadable: {exc.strerror}".encode()


@dataclass(frozen=True)
class Workspace:
    root: Path
    settings: Settings

    @property
    def state_dir(self) -> Path:
        assert self.settings.state_dir is not None, "load_settings always sets state_dir"
        return self.settings.state_dir

    @property
    def sessions_dir(self) -> Path:
        return self.state_dir / "sessions"

    @property
    def agent_state_dir(self) -> Path:
        """Per-project home for agent login and session files, never the host's dot-dirs."""
        return self.state_dir / "agent-home" / self.settings.agent.tool

    @property
    def ledger_url(self) -> str:
        return self.settings.ledger.url or f"sqlite:///{self.state_dir / 'ledger.sqlite'}"

    def protected(self) -> list[Path]:
        """Absolute protected paths (existing or not), in config order."""
        return [self.root / p for p in self.settings.research.protected_paths]

    def is_protected(self, path: Path) -> bool:
        target = path if path.is_absolute() else self.root / path
        target = Path(*target.parts)
        return any(target == p or p in target.parents for p in self.protected())
