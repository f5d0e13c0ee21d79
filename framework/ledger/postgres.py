"""PostgreSQL backend, for a ledger shared by several hosts of a cluster.

Appends lock the single ``ledger_head`` row (``SELECT ... FOR UPDATE``), which serializes writers
across connections exactly like SQLite's write lock; a commit returns after the server has flushed
its WAL (``synchronous_commit`` is forced ``on`` for our sessions), so an acknowledged event survives
a killed client or server. Schema creation takes a transaction-level advisory lock so that several
processes opening a new database at once do not race.
"""

from __future__ import annotations

from typing import Any

from framework.ledger.models import LedgerError
from framework.ledger.store import Ledger

_SCHEMA_LOCK_KEY = 0x1ED6E5  # any constant shared by every process that opens the ledger

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS ledger_events (
        seq BIGINT PRIMARY KEY,
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        run_id TEXT,
        session_id TEXT,
        body BYTEA NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_events_run ON ledger_events (run_id, seq)",
    "CREATE INDEX IF NOT EXISTS ledger_events_session ON ledger_events (session_id, seq)",
    """CREATE TABLE IF NOT EXISTS ledger_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, repeat('0', 64)) ON CONFLICT (id) DO NOTHING",
    """CREATE TABLE IF NOT EXISTS ledger_runs (
        run_id TEXT PRIMARY KEY,
        experiment TEXT,
        state TEXT NOT NULL,
        session_id TEXT,
        submitted_at TEXT NOT NULL,
        first_seq BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        doc TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_runs_order ON ledger_runs (first_seq)",
    "CREATE INDEX IF NOT EXISTS ledger_runs_experiment ON ledger_runs (experiment, first_seq)",
    "CREATE INDEX IF NOT EXISTS ledger_runs_state ON ledger_runs (state, first_seq)",
    "CREATE INDEX IF NOT EXISTS ledger_runs_session ON ledger_runs (session_id, first_seq)",
    "CREATE INDEX IF NOT EXISTS ledger_runs_submitted ON ledger_runs (submitted_at)",
    """CREATE TABLE IF NOT EXISTS ledger_run_tags (
        tag TEXT NOT NULL,
        first_seq BIGINT NOT NULL,
        run_id TEXT NOT NULL,
        PRIMARY KEY (tag, first_seq, run_id)
    )""",
    """CREATE OR REPLACE FUNCTION ledger_events_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'ledger events are append-only: % is refused', TG_OP;
    END
    $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE TRIGGER ledger_events_no_change BEFORE UPDATE OR DELETE ON ledger_events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_append_only()""",
    """CREATE OR REPLACE TRIGGER ledger_events_no_truncate BEFORE TRUNCATE ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_events_append_only()""",
]


class PostgresLedger(Ledger):
    @classmethod
    def open(cls, url: str) -> PostgresLedger:
        try:
            import psycopg
        except ImportError:
            raise LedgerError(
                "a postgresql:// ledger needs the psycopg package: pip install 'psycopg[binary]'"
            ) from None
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
            conn.execute("SET synchronous_commit = on")
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot connect to the ledger database {_redact(url)}: {str(exc).strip()}"
            ) from None
        try:
            return cls(url, conn)
        except psycopg.Error as exc:
            conn.close()
            raise LedgerError(
                f"cannot set up the ledger tables in {_redact(url)}: {str(exc).strip()}"
            ) from None

    def __repr__(self) -> str:
        return f"PostgresLedger({_redact(self.url)!r})"

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def _create_schema(self) -> None:
        self._conn.execute("BEGIN")
        try:
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            for statement in SCHEMA:
                self._conn.execute(statement)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _begin_write(self) -> None:
        self._conn.execute("BEGIN")
        self._conn.execute("SELECT seq FROM ledger_head WHERE id = 1 FOR UPDATE")

    def _begin_snapshot(self) -> None:
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self._conn.info.transaction_status != TransactionStatus.IDLE)

    _columns_sql = (
        "SELECT count(*) FROM ledger_events e, "
        "LATERAL (SELECT convert_from(e.body, 'UTF8')::jsonb AS j) b WHERE "
        "(b.j ->> 'seq')::bigint IS DISTINCT FROM e.seq "
        "OR b.j ->> 'ts' IS DISTINCT FROM e.ts "
        "OR b.j ->> 'kind' IS DISTINCT FROM e.kind "
        "OR b.j ->> 'run_id' IS DISTINCT FROM e.run_id "
        "OR b.j ->> 'session_id' IS DISTINCT FROM e.session_id"
    )

    _code_point_order = ' COLLATE "C"'

    def _scan_cursor(self, name: str = "ledger_verify_scan") -> Any:
        # A server-side cursor streams the chain instead of loading every event into memory.
        cursor = self._conn.cursor(name=name)
        cursor.itersize = 10_000  # rows per round trip while it is iterated
        return cursor


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
