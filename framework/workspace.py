"""The research repository on the host: its root, git state, protected paths and state dirs."""

from __future__ import annotations

import hashlib
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
    """Commit and a hash of the uncommitted diff (tracked files), without invoking a shell."""
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
    dirty = bool(status.stdout.strip())
    digest = hashlib.sha256(diff.stdout).hexdigest() if dirty else None
    return GitState(commit=commit, dirty=dirty, diff_sha256=digest)


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
