"""SQLite backend: one WAL-mode file in the project state dir (the embedded default).

Durability: ``synchronous=FULL`` makes every commit fsync the WAL before ``append`` returns, so an
acknowledged event survives a killed process *and* a power cut. (``NORMAL`` would survive a killed
process too, since the WAL is already in the OS page cache, but not a power cut; we take the
stronger guarantee and reach throughput by batching instead, see ``Ledger.append_many``.)

Concurrency: ``BEGIN IMMEDIATE`` takes SQLite's single write lock before the head is read, so
appenders in any number of processes are serialized and each one chains onto the true head;
``busy_timeout`` makes them wait for the lock instead of failing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from framework.ledger.models import LedgerError
from framework.ledger.store import Ledger

BUSY_TIMEOUT_MS = 60_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_events (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    run_id TEXT,
    session_id TEXT,
    body BLOB NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_events_run ON ledger_events (run_id, seq);
CREATE INDEX IF NOT EXISTS ledger_events_session ON ledger_events (session_id, seq);
CREATE TABLE IF NOT EXISTS ledger_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_runs (
    run_id TEXT PRIMARY KEY,
    experiment TEXT,
    state TEXT NOT NULL,
    session_id TEXT,
    submitted_at TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_runs_order ON ledger_runs (first_seq);
CREATE INDEX IF NOT EXISTS ledger_runs_experiment ON ledger_runs (experiment, first_seq);
CREATE INDEX IF NOT EXISTS ledger_runs_state ON ledger_runs (state, first_seq);
CREATE INDEX IF NOT EXISTS ledger_runs_session ON ledger_runs (session_id, first_seq);
CREATE INDEX IF NOT EXISTS ledger_runs_submitted ON ledger_runs (submitted_at);
CREATE TABLE IF NOT EXISTS ledger_run_tags (
    tag TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (tag, first_seq, run_id)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS ledger_events_no_update BEFORE UPDATE ON ledger_events
BEGIN SELECT RAISE(ABORT, 'ledger events are append-only: UPDATE is refused'); END;
CREATE TRIGGER IF NOT EXISTS ledger_events_no_delete BEFORE DELETE ON ledger_events
BEGIN SELECT RAISE(ABORT, 'ledger events are append-only: DELETE is refused'); END;
"""


def sqlite_path(url: str) -> Path:
    """``sqlite:///abs/path`` (or ``sqlite:////abs/path``) -> ``/abs/path``."""
    rest = url[len("sqlite://") :]
    if rest.startswith("//"):
        rest = rest[1:]
    path = Path(rest)
    if not rest or not path.is_absolute():
        raise LedgerError(
            f"ledger URL {url!r} needs an absolute file path, like sqlite:///home/me/ledger.sqlite"
        )
    return path


class SqliteLedger(Ledger):
    @classmethod
    def open(cls, url: str) -> SqliteLedger:
        path = sqlite_path(url)
        if path.is_dir():
            raise LedgerError(
                f"ledger path {path} is a directory; give a file path, like {path / 'ledger.sqlite'}"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = FULL")
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(
                f"cannot open the ledger at {path}: {exc} (check the path and its permissions)"
            ) from None
        if str(mode).lower() != "wal":
            conn.close()
            raise LedgerError(
                f"cannot put {path} in WAL mode (got {mode!r}); is it on a network file system?"
            )
        try:
            return cls(url, conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LedgerError(f"{path} is not a usable ledger database: {exc}") from None

    def _create_schema(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(SCHEMA):
                self._conn.execute(statement)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _begin_write(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _begin_snapshot(self) -> None:
        self._conn.execute("BEGIN")

    def _in_transaction(self) -> bool:
        return bool(self._conn.in_transaction)

    def _execute(self, statement: str, params: Any = ()) -> Any:
        return self._conn.execute(statement, params)


def _statements(script: str) -> list[str]:
    """Split the schema script on statement ends, keeping trigger bodies whole."""
    statements, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
