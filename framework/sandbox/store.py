"""Host-side session store: ``<state_dir>/sessions/<id>/session.json`` plus copied transcripts.

The agent state dir is written by the (untrusted) agent. Copying out therefore takes regular
files only, never follows symlinks, and keeps every copy inside the session's directory.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from framework import safefs

SESSION_FILE = "session.json"
TRANSCRIPTS_DIR = "transcripts"


class SessionError(LookupError):
    """A session cannot be found or read."""


class SessionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    tool: str
    tool_version: str | None = None
    model: str | None = None
    runtime: str
    network: str
    workspace: Path
    started_at: datetime
    ended_at: datetime | None = None
    exit_code: int | None = None
    git_commit_before: str | None = None
    git_commit_after: str | None = None
    git_dirty_after: bool | None = None
    evaluation_sha256: str | None = Field(
        default=None, description="the protected paths at launch (framework/evaluation.py)"
    )
    headless: bool = False
    detached: bool = False
    container_id: str | None = None
    transcripts: list[str] = Field(
        default_factory=list, description="paths relative to the session dir"
    )
    notes: list[str] = Field(default_factory=list)


def new_session_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


class SessionStore:
    def __init__(self, sessions_dir: Path) -> None:
        self.root = sessions_dir

    def path(self, session_id: str) -> Path:
        if not session_id or "/" in session_id or session_id.startswith("."):
            raise SessionError(f"{session_id!r} is not a session id")
        return self.root / session_id

    def save(self, record: SessionRecord) -> Path:
        directory = self.path(record.id)
        # host-path: the session store (state_dir/sessions), which no sandbox mounts
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / SESSION_FILE
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(record.model_dump_json(indent=2) + "\n")  # host-path: the session store
        os.replace(tmp, target)  # host-path: the session store
        return target

    def load(self, session_id: str) -> SessionRecord:
        file = self.path(session_id) / SESSION_FILE
        if not file.is_file():  # host-path: the session store
            known = ", ".join(r.id for r in self.records()[-5:]) or "none yet"
            raise SessionError(
                f"no session {session_id!r} in {self.root} (latest: {known}); "
                "`agentic-researcher sessions list` shows them all"
            )
        return SessionRecord.model_validate_json(file.read_text())  # host-path: the session store

    def records(self) -> list[SessionRecord]:
        if not self.root.is_dir():  # host-path: the session store
            return []
        records = []
        for directory in sorted(self.root.iterdir()):  # host-path: the session store
            file = directory / SESSION_FILE
            if file.is_file():  # host-path: the session store
                # host-path: the session store
                records.append(SessionRecord.model_validate_json(file.read_text()))
        return sorted(records, key=lambda r: r.started_at)

    def copy_transcripts(self, record: SessionRecord, home: Path, files: list[Path]) -> list[str]:
        """Copy regular files under ``home`` into the session dir, keeping their relative paths.
        The agent home is the agent's: each file is read beneath ``home`` through no link (a
        planted link, FIFO or a name that vanished is skipped, never followed)."""
        out_root = self.path(record.id) / TRANSCRIPTS_DIR
        copied: list[str] = []
        for source in files:
            try:
                relative = source.relative_to(home).as_posix()
            except ValueError:
                continue
            target = out_root / relative
            target.parent.mkdir(parents=True, exist_ok=True)  # host-path: the session store
            try:
                safefs.copy_out(home, relative, target)
            except OSError:
                continue
            copied.append(f"{TRANSCRIPTS_DIR}/{relative}")
        return copied
