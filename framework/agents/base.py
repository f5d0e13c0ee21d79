"""What the launcher needs to know about one CLI coding agent.

Each agent module (claude.py, codex.py, gemini.py, opencode.py) defines one :class:`AgentProfile`.
Paths under ``home`` are relative to HOME inside the sandbox, which is the per-project agent state
dir on the host; so login, settings and session files persist across launches and the host's own
dot-directories are never involved.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from framework import safefs


class AgentInvocation(BaseModel):
    """How the agent is asked to run in this session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = Field(default=None, description="headless when set, interactive otherwise")
    model: str | None = None
    yolo: bool = False
    resume: str | None = Field(default=None, description="session id to resume")
    continue_last: bool = False
    extra_args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_resume_mode(self) -> AgentInvocation:
        if self.resume and self.continue_last:
            raise ValueError("use either --resume ID or --continue, not both")
        return self

    @property
    def headless(self) -> bool:
        return self.prompt is not None


@dataclass(frozen=True)
class AgentProfile:
    name: str
    binary: str
    package: str
    instruction_files: tuple[str, ...]
    state_paths: tuple[str, ...]
    """Files and directories under HOME that hold login, settings and sessions."""
    transcript_globs: tuple[str, ...]
    """Globs under HOME that match the session transcripts copied to the session store."""
    api_key_env: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, how: AgentInvocation) -> list[str]:
        raise NotImplementedError

    def version_argv(self) -> list[str]:
        return [self.binary, "--version"]

    def environment(self, how: AgentInvocation) -> dict[str, str]:
        """Fixed variables the agent needs inside the sandbox (no secrets)."""
        return dict(self.env)

    def prepare_home(self, home: Path) -> None:
        """Create the state paths so bind mounts and first runs find them. The home is the
        agent's: a link on the way raises :class:`~framework.safefs.UnsafePath`, and anything
        already at a file's name (a dangling link included) is left as it is, never written
        through."""
        for rel in self.state_paths:
            if rel.endswith(".json"):
                with contextlib.suppress(FileExistsError):
                    safefs.write_new(home, rel, b"{}\n", create_dirs=True)
            else:
                os.close(safefs.open_directory(home, rel, create=True))

    def transcript_state(self, home: Path) -> dict[Path, tuple[int, int]]:
        """Size and mtime (ns) of each transcript under ``home``: taken before a session, it tells
        :meth:`changed_transcripts` which files that session wrote."""
        state: dict[Path, tuple[int, int]] = {}
        for path in self.transcripts(home):
            with contextlib.suppress(OSError, ValueError):
                info = safefs.stat_beneath(home, path.relative_to(home))
                if info is not None:
                    state[path] = (info.st_size, info.st_mtime_ns)
        return state

    def changed_transcripts(self, home: Path, before: dict[Path, tuple[int, int]]) -> list[Path]:
        """The transcripts this session created or changed. The agent home persists across
        launches, so the files of earlier sessions are left out: an audit of this session must
        not report what an earlier one did. A resumed session appends to its old file, which
        therefore counts as changed and is copied whole."""
        after = self.transcript_state(home)
        return [path for path, state in after.items() if before.get(path) != state]

    def prune_copies(self, copies: list[Path], since: datetime) -> None:
        """Remove from the copied transcripts what belongs to sessions before ``since``, where one
        file holds many sessions (nothing to do for one file per session)."""

    def transcripts(self, home: Path) -> list[Path]:
        """Regular files under ``home`` that match the transcript globs, reached through no link
        (the agent home is the agent's: a link on the way is neither followed nor listed)."""
        found: set[Path] = set()
        for pattern in self.transcript_globs:
            found.update(home / name for name in safefs.glob(home, pattern))
        return sorted(found)
