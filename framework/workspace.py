"""The research repository on the host: its root, git state, protected paths and state dirs."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from framework.config import WORKSPACE_DIR_NAME, Settings


class WorkspaceError(RuntimeError):
    """The workspace is missing or not usable; the message says what to do."""


def find_root(start: Path | None = None) -> Path:
    """The enclosing git work tree, or ``start`` itself when it is not in a repository."""
    here = (start or Path.cwd()).resolve()
    if not here.is_dir():
        raise WorkspaceError(f"workspace {here} is not a directory")
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists() or (candidate / WORKSPACE_DIR_NAME).is_dir():
            return candidate
    return here


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool
    diff_sha256: str | None


def git_state(root: Path) -> GitState:
    """Commit, whether anything is uncommitted, and a hash of what is: the diff of tracked files
    and the untracked files that are not ignored (a new script the agent never committed is
    uncommitted work too), by path and content. No shell is invoked."""
    if not (root / ".git").exists():
        return GitState(commit=None, dirty=False, diff_sha256=None)

    # The repository may belong to another user (a Docker session's container uid): name it safe
    # for these reads, and keep fsmonitor off so that reading runs nothing the repo configures.
    trust = ("-c", f"safe.directory={root}", "-c", "core.fsmonitor=false")

    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", *trust, "-C", str(root), *args], capture_output=True, check=False
        )

    head = git("rev-parse", "--verify", "-q", "HEAD")
    commit = head.stdout.decode().strip() or None
    diff = git("diff", "HEAD", "--binary") if commit else git("diff", "--binary")
    status = git("status", "--porcelain", "--untracked-files=no")
    untracked = sorted(
        p for p in git("ls-files", "-z", "--others", "--exclude-standard").stdout.split(b"\0") if p
    )
    dirty = bool(status.stdout.strip()) or bool(untracked)
    if not dirty:
        return GitState(commit=commit, dirty=False, diff_sha256=None)
    digest = hashlib.sha256(diff.stdout)
    for path in untracked:
        digest.update(b"\0untracked\0" + path + b"\0" + _content_id(root / os.fsdecode(path)))
    return GitState(commit=commit, dirty=True, diff_sha256=digest.hexdigest())


HASHED_UNTRACKED_BYTES = 64 << 20
"""Untracked files up to this size are identified by content; larger ones by size and mtime."""


def _content_id(path: Path) -> bytes:
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > HASHED_UNTRACKED_BYTES:
            return f"{info.st_mode:o} {info.st_size} {info.st_mtime_ns}".encode()
        with path.open("rb") as fh:
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
