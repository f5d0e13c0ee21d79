"""OpenCode (``opencode-ai``): reads AGENTS.md, keeps config in ~/.config/opencode and every
session, message and part in the SQLite database ~/.local/share/opencode/opencode.db (before 1.x:
JSON files under ~/.local/share/opencode/storage/)."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime
from pathlib import Path

from framework import safefs
from framework.agents.base import AgentInvocation, AgentProfile

DATABASE = ".local/share/opencode/opencode.db"
CLOCK_SLACK_MS = 2_000


class OpenCodeProfile(AgentProfile):
    def argv(self, how: AgentInvocation) -> list[str]:
        args = [self.binary]
        if how.prompt is not None:
            args.append("run")
        if how.model:
            args += ["--model", how.model]
        if how.resume:
            args += ["--session", how.resume]
        elif how.continue_last:
            args.append("--continue")
        if how.yolo:
            args.append("--auto")
        if how.prompt is not None:
            args += ["--format", "json", how.prompt]
        return args + list(how.extra_args)

    def changed_transcripts(self, home: Path, before: dict[Path, tuple[int, int]]) -> list[Path]:
        """The database and its write-ahead log are one transcript: OpenCode may leave a whole
        session in the log, and the log alone cannot be read."""
        changed = super().changed_transcripts(home, before)
        pair = [home / DATABASE, home / (DATABASE + "-wal")]
        if any(path in changed for path in pair):
            changed += [
                path
                for path in pair
                if path not in changed and safefs.is_regular_file(home, path.relative_to(home))
            ]
        return sorted(changed)

    def prune_copies(self, copies: list[Path], since: datetime) -> None:
        """One database holds every session of the agent home: keep in the copy only the sessions
        updated since ``since`` (new, resumed or continued in this launch), fold its log into it
        and compact it. A copy that cannot be read as such is left as it is."""
        cutoff = int(since.timestamp() * 1000) - CLOCK_SLACK_MS
        for copy in copies:
            if copy.name == Path(DATABASE).name:
                with contextlib.suppress(sqlite3.Error):
                    _keep_sessions_since(copy, cutoff)


PROFILE = OpenCodeProfile(
    name="opencode",
    binary="opencode",
    package="opencode-ai",
    instruction_files=("AGENTS.md",),
    state_paths=(".config/opencode", ".local/share/opencode"),
    transcript_globs=(
        ".local/share/opencode/opencode.db",
        ".local/share/opencode/opencode.db-wal",
        ".local/share/opencode/storage/session/*/*.json",
        ".local/share/opencode/storage/message/*/*.json",
        ".local/share/opencode/storage/part/*/*/*.json",
    ),
    api_key_env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"),
    # In the sandbox OpenCode reaches no package registry, no GitHub and no models.opencode.ai,
    # and its binary sits read-only on /usr or in the image: it must not try to update, download
    # language servers, install its default plugins from npm or refresh its model catalogue (the
    # one built into the binary serves). Left on, 1.18.33 asks models.opencode.ai and github.com.
    env={
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_SHARE": "1",
    },
)


def _keep_sessions_since(database: Path, cutoff_ms: int) -> None:
    db = sqlite3.connect(database, isolation_level=None)
    try:
        old = [
            row[0]
            for row in db.execute("SELECT id FROM session WHERE time_updated < ?", (cutoff_ms,))
        ]
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        db.execute("BEGIN")
        db.execute("CREATE TEMP TABLE gone (id TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO gone VALUES (?)", [(sid,) for sid in old])
        if "part" in tables:
            db.execute(
                "DELETE FROM part WHERE message_id IN "
                "(SELECT id FROM message WHERE session_id IN (SELECT id FROM gone))"
            )
        for table in tables:
            columns = {row[1] for row in db.execute(f'PRAGMA table_info("{table}")')}
            if "session_id" in columns:
                db.execute(f'DELETE FROM "{table}" WHERE session_id IN (SELECT id FROM gone)')
        db.execute("DELETE FROM session WHERE id IN (SELECT id FROM gone)")
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=DELETE")  # folds the log in and removes it
        db.execute("VACUUM")
    finally:
        db.close()
