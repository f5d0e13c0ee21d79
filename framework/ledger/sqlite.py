"""SQLite backend: one WAL-mode file in the project state dir (the embedded default), and beside
it the tail file (``ledger.sqlite-tail``) and its version counter (``ledger.sqlite-tail.version``),
see ``framework/ledger/tail.py``.

An append is acknowledged once its events are in the tail: chained onto the true head under an
exclusive ``flock`` that every appending process takes, and written with one ``write()``. A fold
moves the tail's events into the tables (events, run states, tags, head) in one SQLite
transaction, then empties the tail; it runs when the tail reaches :data:`FOLD_AT_BYTES`, before
every read (``events``, ``runs``, ``run``, ``head``, ``verify``) and on ``close``. One SQLite
commit per event cost about 250 µs of CPU; the tail write costs a few.

Durability is chosen in the URL, ``sqlite:///path/ledger.sqlite?sync=normal|full``:

- ``normal`` (default): an acknowledged event has been written to the tail with ``write()``, so it
  is in the operating system's page cache and survives the writer being killed (SIGKILL, OOM, a
  crash). A power cut or kernel crash can lose the latest events, never those already folded.
- ``full``: every tail write is also ``fdatasync``'ed before the append returns, so acknowledged
  events survive a power cut too.

At both levels a fold's SQLite commit is synced before the tail is emptied, so the tail never
loses events the tables do not durably have.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import msgspec

from framework import checkout_env
from framework.ledger import chain
from framework.ledger.models import RUN_EVENT_KINDS, LedgerError
from framework.ledger.store import (
    KINDS,
    ChainHelper,
    Entry,
    Ledger,
    _Request,
)
from framework.ledger.tail import STORED, Tail

BUSY_TIMEOUT_MS = 60_000
CACHE_KIB = 32 * 1024  # page cache per connection: keeps the index pages hot while appending
SYNC_LEVELS = ("normal", "full")
DEFAULT_SYNC = "normal"
FOLD_AT_BYTES = 1 << 20  # fold the tail into the tables once it holds this much (~3,000 events)
FOLD_LIMIT_BYTES = 16 << 20  # beyond this an appender folds itself: the background folder is behind
BACKGROUND_ROUNDS = 16  # unlocked rounds before the locked fold that empties the tail
WAKE_EVERY_BYTES = FOLD_AT_BYTES // 4  # how often appenders nudge the folder while the tail grows
SMALL_ROUND = 128  # a round this small means appenders are not outpacing the folder
SPLIT_CHAIN_MIN_EVENTS = 100_000  # below this, starting a helper process costs more than it saves

# The indexed columns are computed from the hashed body by SQLite itself, so they cannot disagree
# with it: UPDATE of them is refused, and verify need not compare them row by row (it only checks
# that the table still has this definition). Ledgers created before this (columns stored beside
# the body) keep working; verify then compares the columns with the bodies.
EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS ledger_events (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    hash TEXT NOT NULL,
    ts TEXT AS (json_extract(CAST(body AS TEXT), '$.ts')) VIRTUAL,
    kind TEXT AS (json_extract(CAST(body AS TEXT), '$.kind')) VIRTUAL,
    run_id TEXT AS (json_extract(CAST(body AS TEXT), '$.run_id')) VIRTUAL,
    session_id TEXT AS (json_extract(CAST(body AS TEXT), '$.session_id')) VIRTUAL
);
"""
DERIVED_EVENTS_SQL = (
    EVENTS_TABLE.strip().rstrip(";").replace("CREATE TABLE IF NOT EXISTS", "CREATE TABLE", 1)
)

SCHEMA = (
    EVENTS_TABLE
    + """
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
)


def tail_path(path: Path) -> Path:
    """The tail file beside the database: ``ledger.sqlite`` -> ``ledger.sqlite-tail``."""
    return path.with_name(path.name + "-tail")


def sqlite_path(url: str) -> Path:
    """``sqlite:///abs/path`` (or ``sqlite:////abs/path``, with or without a ``?query``) ->
    ``/abs/path``."""
    rest = url[len("sqlite://") :].partition("?")[0]
    if rest.startswith("//"):
        rest = rest[1:]
    path = Path(rest)
    if not rest or not path.is_absolute():
        raise LedgerError(
            f"ledger URL {url!r} needs an absolute file path, like sqlite:///home/me/ledger.sqlite"
        )
    return path


def sqlite_sync(url: str) -> str:
    """The durability level named by ``?sync=`` in the URL (default :data:`DEFAULT_SYNC`)."""
    query = url.partition("?")[2]
    options = parse_qs(query, keep_blank_values=True, separator="&")
    unknown = sorted(set(options) - {"sync"})
    if unknown:
        raise LedgerError(
            f"ledger URL {url!r} has unknown option(s) {', '.join(unknown)}; "
            f"the only one is sync={'|'.join(SYNC_LEVELS)}"
        )
    values = options.get("sync", [DEFAULT_SYNC])
    level = values[-1].lower()
    if len(values) > 1 or level not in SYNC_LEVELS:
        raise LedgerError(
            f"ledger URL {url!r}: sync must be one of {', '.join(SYNC_LEVELS)} "
            "(normal: survives a killed process; full: also a power cut, slower)"
        )
    return level


class SqliteLedger(Ledger):
    sync = DEFAULT_SYNC
    """The durability level of this ledger's commits: ``normal`` or ``full``."""
    _tail: Tail
    _run_ids: set[str]
    """Runs known to have events, so that a run is submitted once without a query per submission:
    those of the tables up to seq :attr:`_run_ids_upto` (read incrementally when another process
    has folded further), and every run of the tail (:attr:`Tail.run_ids` is this same set)."""
    _run_ids_upto = -1  # -1: the tables' runs are not read yet (the first append reads them)
    background_fold = True
    """Fold a large tail in a background process with its own connection, so that appenders do
    not wait for SQLite (see :class:`_Folder`); False: the appender that fills the tail folds it."""
    _folder: _Folder | None = None
    _closed = False

    @classmethod
    def open(cls, url: str) -> SqliteLedger:
        path = sqlite_path(url)
        sync = sqlite_sync(url)
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
            conn.execute(f"PRAGMA synchronous = {sync.upper()}")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
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
            ledger = cls(url, conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LedgerError(f"{path} is not a usable ledger database: {exc}") from None
        ledger.sync = sync
        ledger._run_ids = set()
        try:
            ledger._tail = Tail(tail_path(path), fsync=sync == "full", run_ids=ledger._run_ids)
        except LedgerError:
            conn.close()
            raise
        return ledger

    def close(self) -> None:
        """Fold the tail into the tables (so that the database file alone holds every event, as
        far as this process can make it) and close."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._folder is not None:
                self._folder.stop()
                self._folder = None
            # On failure the events stay in the tail; the next reader folds them or says why not.
            with contextlib.suppress(LedgerError, OSError, sqlite3.Error):
                self._catch_up()
            self._tail.close()
            self._close_anchor()
            self._conn.close()

    # -- the tail: appends are acknowledged once written there ---------------------------------

    def _write_group(self, group: list[_Request]) -> None:
        """Chain the requests onto the true head and write them to the tail in one ``write()``,
        under the lock every appending process takes; fold the tail once it is large."""
        tail = self._tail
        tail.lock()
        try:
            tail.sync(self._read_head, trust_version=True)
            if tail.after[0] > self._run_ids_upto:
                self._read_run_ids(tail.after[0])
            chained, runs = self._chain_group(group, *tail.head, self._run_ids)
            if not chained:
                return
            tail.append(chained, runs)
            if self._anchor is not None:  # under the tail's lock: records follow the chain
                self._anchor.write(*tail.head)
            size = tail.size
            if size >= FOLD_AT_BYTES:
                if self.background_fold and size < FOLD_LIMIT_BYTES and self._wake_folder(size):
                    return
                # The events are acknowledged whatever happens here; a reader folds them later.
                with contextlib.suppress(LedgerError, sqlite3.Error):
                    self._fold()
        finally:
            tail.unlock()

    def _wake_folder(self, tail_size: int) -> bool:
        """Wake the background folder (starting one if none runs) when the tail has grown by
        :data:`WAKE_EVERY_BYTES` since it was last woken, or was emptied since. False when no
        folder can run: the appender then folds itself."""
        folder = self._folder
        if folder is None or not folder.alive():
            if folder is not None:
                failed = folder.failed()
                folder.stop()
                self._folder = None
                if failed:
                    self.background_fold = False
                    return False
            try:
                self._folder = folder = _Folder(self.url)
            except OSError:
                self.background_fold = False
                return False
        if tail_size < folder.woken_at or tail_size - folder.woken_at >= WAKE_EVERY_BYTES:
            folder.wake(tail_size)
        return True

    def _read_run_ids(self, upto: int) -> None:
        """Add to :attr:`_run_ids` the runs the tables have beyond :attr:`_run_ids_upto` (all of
        them the first time; afterwards those another process folded), the tables holding every
        event up to seq ``upto``. Called under the lock, so no fold runs meanwhile."""
        self._run_ids.update(
            row[0]
            for row in self._execute(
                "SELECT run_id FROM ledger_runs WHERE first_seq > ?", (self._run_ids_upto,)
            )
        )
        self._run_ids_upto = upto

    def _catch_up(self) -> None:
        if self._tail.may_hold_events():
            with self._tail.locked():
                self._fold()

    def _fold(self) -> None:
        """Move the tail's events into the tables, then empty the tail (under the tail's lock).
        The transaction is fsynced whatever the sync level: the emptied tail must not outlive a
        fold that a power cut could undo. Events the tables already hold (folded by a
        background round, or by a process that died before emptying the tail) are skipped."""
        tail = self._tail
        tail.sync(self._read_head)
        if not tail.digests:
            return
        self._fold_events(tail.after, tail.bodies, tail.digests)
        if self._run_ids_upto >= tail.after[0]:
            # The runs of the tables up to the tail's start were known and the tail's are too.
            self._run_ids_upto = tail.head[0]
        tail.clear()

    def _fold_round(self) -> int:
        """Fold what the tail holds now, holding the tail's lock only to read it: appenders go
        on meanwhile. The tail is not emptied (a locked :meth:`_fold` does that, with whatever
        was appended since). Returns the number of events this round put into the tables."""
        tail = self._tail
        tail.lock()
        try:
            tail.sync(self._read_head)
            after, bodies, digests = tail.after, tail.bodies[:], tail.digests[:]
        finally:
            tail.unlock()
        return self._fold_events(after, bodies, digests, durable=False) if digests else 0

    def _fold_behind(self) -> None:
        """The background folder's work: unlocked rounds while appenders keep adding more than a
        small round's worth, then a locked fold of the rest, which empties the tail."""
        with self._lock:
            for _ in range(BACKGROUND_ROUNDS):
                if self._fold_round() < SMALL_ROUND:
                    break
            self._catch_up()

    def _fold_events(
        self,
        after: tuple[int, str],
        bodies: list[bytes],
        digests: list[str],
        *,
        durable: bool = True,
    ) -> int:
        """Put into the tables, in one transaction, the events of a tail continuing from
        ``after`` that they do not hold yet. The database head is read inside the transaction,
        so two folds of the same events (a background round and a locked fold, or two processes)
        cannot both write them. Returns how many events were written.

        ``durable``: the commit is fsynced whatever the ledger's sync level, as it must be before
        the tail is emptied. A background round (``durable=False``) leaves the tail as it is, so
        it commits at the ledger's own level; the locked fold that empties the tail fsyncs the
        WAL, and with it every round committed before."""
        raise_level = durable and self.sync != "full"
        if raise_level:
            self._conn.execute("PRAGMA synchronous = FULL")
        try:
            self._begin_write()
            try:
                skip = self._fold_skip(after, digests)
                if skip < len(digests):
                    self._store_tail(after[0] + skip + 1, bodies[skip:], digests[skip:])
                self._commit()
            except BaseException:
                self._rollback()
                raise
        finally:
            if raise_level:
                self._conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
        return max(0, len(digests) - skip)

    def _fold_skip(self, after: tuple[int, str], digests: list[str]) -> int:
        """How many of the tail's first events the tables hold already, after checking that the
        tail and the tables agree where they meet (in the write transaction)."""
        tail = self._tail
        (database_seq, database_hash), after_seq = self._read_head(), after[0]
        if database_seq < after_seq:
            raise LedgerError(
                f"the ledger database {sqlite_path(self.url)} ends at seq {database_seq} but its "
                f"tail file continues from seq {after_seq}: was the database replaced by an older copy?"
            )
        if database_seq > after_seq:
            # Folded already, wholly or in part: the tables must hold the same events.
            last_both = min(database_seq, after_seq + len(digests))
            stored = self._execute(
                "SELECT hash FROM ledger_events WHERE seq = ?", (last_both,)
            ).fetchone()
            if stored is None or stored[0] != digests[last_both - after_seq - 1]:
                raise LedgerError(
                    f"the ledger's tail file {tail.path} and its database disagree at seq {last_both}"
                )
        elif after[1] != database_hash:
            raise LedgerError(
                f"the ledger's tail file {tail.path} does not continue its database's last event"
            )
        return database_seq - after_seq

    def _store_tail(self, first_seq: int, bodies: list[bytes], digests: list[str]) -> None:
        """:meth:`_store` for the tail's events, given as their bodies and hashes: the event rows
        are inserted straight from those lists, and each body is decoded only to fold it into its
        run's state, then dropped (no object per event outlives its turn in the loop)."""
        seqs = range(first_seq, first_seq + len(bodies))
        decode, kinds = STORED.decode, KINDS
        try:
            if self._stores_index_columns:  # an older ledger: its rows carry the columns
                self._store(
                    [
                        Entry(
                            seq,
                            body,
                            digest,
                            e.ts,
                            kinds[e.kind],
                            e.run_id,
                            e.session_id,
                            e.payload,
                        )
                        for seq, body, digest in zip(seqs, bodies, digests, strict=True)
                        for e in (decode(body),)
                    ]
                )
                return
            self._conn.executemany(
                "INSERT INTO ledger_events (seq, body, hash) VALUES (?, ?, ?)",
                zip(seqs, bodies, digests, strict=True),
            )
            run_kinds = RUN_EVENT_KINDS
            self._fold_runs(
                (
                    (seq, e.ts, kind, e.run_id, e.session_id, e.payload)
                    for seq, body in zip(seqs, bodies, strict=True)
                    for e in (decode(body),)
                    if e.run_id is not None
                    for kind in (kinds[e.kind],)
                    if kind in run_kinds
                ),
                {},
                self._load_doc,
            )
        except (msgspec.ValidationError, msgspec.DecodeError, KeyError):
            # Each body was chained when it was read, but the last one has no successor naming it.
            raise LedgerError(
                f"the ledger's tail file {self._tail.path} holds an event that is not a valid "
                "event body (it was edited); run `agentic-researcher ledger verify`"
            ) from None
        self._store_head(seqs[-1], digests[-1])

    def _load_doc(self, run_id: str) -> dict[str, Any] | None:
        row = self._execute("SELECT doc FROM ledger_runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else msgspec.json.decode(row[0])

    def _create_schema(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(SCHEMA):
                self._conn.execute(statement)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._stores_index_columns = not self._columns_are_derived()

    def _columns_are_derived(self) -> bool:
        row = self._conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'ledger_events'"
        ).fetchone()
        return row is not None and row[0] == DERIVED_EVENTS_SQL

    def _begin_write(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _begin_snapshot(self) -> None:
        self._conn.execute("BEGIN")

    def _in_transaction(self) -> bool:
        return bool(self._conn.in_transaction)

    def _split_chain(self, last_seq: int) -> ChainHelper | None:
        """On a large ledger, a helper process walks the second half of the chain while this
        process walks the first: hashing is most of the work and one Python process uses one core."""
        if last_seq < SPLIT_CHAIN_MIN_EVENTS:
            return None
        first = last_seq // 2 + 1
        row = self._conn.execute(
            "SELECT hash FROM ledger_events WHERE seq = ?", (first - 1,)
        ).fetchone()
        if row is None or not isinstance(row[0], str):
            return None  # the walk here will stop at the gap; the exact pass says what it is
        try:
            return _ChainProcess(self._readonly_uri(), first, last_seq, row[0])
        except OSError:
            return None

    def _readonly_uri(self) -> str:
        return f"file:{quote(str(sqlite_path(self.url)))}?mode=ro"

    def _start_columns_check(self) -> Callable[[], bool]:
        """Nothing to check when the table derives its indexed columns from the bodies. Otherwise
        (an older ledger, or a table someone rebuilt) run the check on a second, read-only
        connection in a thread: SQLite releases the GIL while it runs the query, so it uses another
        core while this thread walks the hash chain. Rows appended meanwhile were written by the
        ledger, so they agree too."""
        if self._columns_are_derived():
            return lambda: True
        uri = self._readonly_uri()
        answer: list[bool] = []

        def check() -> None:
            try:
                conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
                try:
                    answer.append(conn.execute(self._columns_sql).fetchone()[0] == 0)
                finally:
                    conn.close()
            except sqlite3.Error:
                answer.append(False)  # e.g. a body that is not JSON: the exact pass says which

        worker = threading.Thread(target=check, name="ledger-verify-columns", daemon=True)
        worker.start()

        def columns_agree() -> bool:
            worker.join()
            return answer == [True]

        return columns_agree

    def _execute(self, statement: str, params: Any = ()) -> Any:
        return self._conn.execute(statement, params)


class _Folder:
    """A process that folds a ledger's tail into its tables while the ledger's appenders go on
    (``python -m framework.ledger.folder URL``; see there). A thread would not do: the fold is
    half Python, and appends and fold would take turns on one interpreter lock.

    It is woken by a byte on its standard input and exits when that closes (the owner closed the
    ledger or died) or after a while without work. If it dies, or falls behind, nothing is lost:
    the tail keeps every acknowledged event until a fold has committed them, and past
    :data:`FOLD_LIMIT_BYTES` the appenders fold it themselves."""

    def __init__(self, url: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "framework.ledger.folder", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=checkout_env(),
            cwd=Path(__file__).resolve().parents[2],
            # Not in the terminal's process group: a Ctrl-C meant for the owner must not cut a
            # fold short (it would be rolled back, not lost); the folder ends when its pipe closes.
            start_new_session=True,
        )
        assert self._proc.stdin is not None
        self._wake_fd = self._proc.stdin.fileno()
        os.set_blocking(self._wake_fd, False)
        self.woken_at = -1
        """The tail's size when it was last woken (-1: never)."""

    def alive(self) -> bool:
        return self._proc.poll() is None

    def failed(self) -> bool:
        """It ended with an error (it could not open the ledger, say): start no other."""
        return self._proc.poll() not in (None, 0)

    def wake(self, tail_size: int) -> None:
        with contextlib.suppress(OSError):  # full pipe: it is awake; closed: it is gone
            os.write(self._wake_fd, b"\n")
        self.woken_at = tail_size

    def stop(self, timeout_s: float = 120.0) -> None:
        """Let it finish its fold (closing its input tells it to) and reap it."""
        with contextlib.suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()  # safe: a fold that is cut short leaves its events in the tail
            self._proc.wait()


class _ChainProcess:
    """``framework/ledger/chain.py`` run as a script on seqs first..last (a :class:`ChainHelper`)."""

    def __init__(self, uri: str, first: int, last: int, prev_hash: str) -> None:
        self.first_seq, self.last_seq = first, last
        # -I -S: no site-packages, no environment: the script needs only the standard library.
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", chain.__file__, uri, str(first), str(last), prev_hash],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def result(self) -> tuple[int, str] | None:
        out, _ = self._proc.communicate()
        seq, _, digest = out.strip().partition(" ")
        if self._proc.returncode != 0 or not seq.isdigit() or int(seq) != self.last_seq:
            return None
        return int(seq), digest

    def cancel(self) -> None:
        self._proc.kill()
        self._proc.communicate()


def _statements(script: str) -> list[str]:
    """Split the schema script on statement ends, keeping trigger bodies whole."""
    statements, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
