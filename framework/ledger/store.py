"""The append-only event store with its hash chain and the materialized run-state table.

Each backend (``sqlite.py``, ``postgres.py``) supplies a DB-API connection, its schema and how it
takes the ledger's write lock; everything else (chaining, folding, queries, verification) lives
here once. SQL is written with ``?`` placeholders; backends with another paramstyle translate.
A backend may acknowledge appends before its tables hold them (SQLite writes them to a tail file
first): it overrides ``_write_group``, and ``_catch_up``, which every read calls first.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import msgspec

from framework.ledger import anchor as anchors
from framework.ledger.chain import walk
from framework.ledger.models import (
    GENESIS_HASH,
    RUN_EVENT_KINDS,
    EventKind,
    LedgerError,
    LedgerEvent,
    RunState,
    RunStatus,
    VerifyProblem,
    VerifyReport,
    fold_run,
    validate_payload,
)

MAX_PROBLEMS = 100
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}")
_id_match = _ID_PATTERN.fullmatch


class NewEvent(NamedTuple):
    """An event to append (the ledger assigns seq, ts and hashes)."""

    kind: EventKind | str
    run_id: str | None = None
    session_id: str | None = None
    payload: dict[str, Any] = {}  # noqa: RUF012 - NamedTuple defaults are never mutated here


_Prepared = tuple[EventKind, str | None, str | None, dict[str, Any]]
_KIND_TEXT: dict[EventKind, str] = {kind: str(kind.value) for kind in EventKind}
_SESSION_KINDS = frozenset({EventKind.session_started, EventKind.session_ended})
KINDS: dict[str, EventKind] = {text: kind for kind, text in _KIND_TEXT.items()}


class ChainHelper(Protocol):
    """A walk of seqs ``first_seq``..last running elsewhere (see ``Ledger._split_chain``)."""

    first_seq: int

    def result(self) -> tuple[int, str] | None:
        """Wait; (last seq, last hash) if that part of the chain is intact, else None."""

    def cancel(self) -> None: ...


class _Request:
    """One ``append_many`` call waiting in the group-commit queue."""

    __slots__ = ("_signal", "done", "error", "events", "prepared")

    def __init__(self, prepared: list[_Prepared]) -> None:
        self.prepared = prepared
        self.events: list[LedgerEvent] = []
        self.error: BaseException | None = None
        self.done = False
        self._signal: Any = None  # made by arm(), only for a request that must wait its turn

    def arm(self) -> None:
        """Make the signal wait() blocks on; called before anyone can wake this request."""
        self._signal = threading.Lock()  # held until wake(): the cheapest one-shot signal
        self._signal.acquire()

    def wait(self) -> None:
        self._signal.acquire()

    def wake(self) -> None:
        self._signal.release()


class Entry(NamedTuple):
    """A chained event on its way into the tables (its body is what is hashed)."""

    seq: int
    body: bytes
    digest: str
    ts: str
    kind: EventKind
    run_id: str | None
    session_id: str | None
    payload: dict[str, Any]


def _submitted_ids(group: list[_Request]) -> set[str]:
    return {
        run_id
        for request in group
        for kind, run_id, _, _ in request.prepared
        if run_id is not None and kind is EventKind.run_submitted
    }


def _chain(
    prepared: list[_Prepared],
    seq: int,
    prev: str,
    ts: str,
    moment: datetime,
    known: Container[str],
    chained: Container[str],
) -> tuple[list[Entry], list[LedgerEvent], set[str]]:
    """Number and hash one request's events after (seq, prev): its entries, the events to return
    and the runs they are about. Refuses the request if it submits a run in ``known`` (runs with
    events in the ledger), in ``chained`` (runs of the requests chained before it) or one it
    already has events of.
    The hot loop of appends: names are bound locally and the body is encoded inline (same bytes
    as :func:`canonical_body`)."""
    encode, sha256, written = _ENCODER.encode, hashlib.sha256, LedgerEvent.written
    entries: list[Entry] = []
    events: list[LedgerEvent] = []
    runs: set[str] = set()
    for kind, run_id, session_id, payload in prepared:
        if run_id is not None and kind in RUN_EVENT_KINDS:
            if kind is EventKind.run_submitted and (
                run_id in known or run_id in chained or run_id in runs
            ):
                raise LedgerError(
                    f"run {run_id!r} is already in the ledger; a run is submitted once (use a new run id)"
                )
            runs.add(run_id)
        seq += 1
        body = encode(
            {
                "seq": seq,
                "ts": ts,
                "kind": _KIND_TEXT[kind],
                "run_id": run_id,
                "session_id": session_id,
                "payload": payload,
                "prev_hash": prev,
            }
        )
        digest = sha256(body).hexdigest()
        entries.append(Entry(seq, body, digest, ts, kind, run_id, session_id, payload))
        events.append(written(seq, moment, kind, run_id, session_id, payload, prev, digest))
        prev = digest
    return entries, events, runs


class Envelope(msgspec.Struct, gc=False):
    """The chained fields of an event body, decoded without its payload: exact verification, and
    following the chain through another process's appends to the tail."""

    seq: int
    ts: str
    kind: str
    run_id: str | None
    session_id: str | None
    prev_hash: str


ENVELOPE = msgspec.json.Decoder(Envelope)
_ENCODER = msgspec.json.Encoder(order="sorted")


def canonical_body(
    *,
    seq: int,
    ts: str,
    kind: str,
    run_id: str | None,
    session_id: str | None,
    payload: dict[str, Any],
    prev_hash: str,
) -> bytes:
    """The bytes that are hashed: compact JSON with sorted keys (nested ones too)."""
    return _ENCODER.encode(
        {
            "seq": seq,
            "ts": ts,
            "kind": kind,
            "run_id": run_id,
            "session_id": session_id,
            "payload": payload,
            "prev_hash": prev_hash,
        }
    )


# The last second _now() formatted: (seconds, its text as a template, its datetime fields).
_second: tuple[int, str, tuple[int, int, int, int, int, int]] = (-1, "", (1, 1, 1, 0, 0, 0))


def _now() -> tuple[str, datetime]:
    """The time now, as stored (what :func:`utc_iso` gives) and as a datetime. Formats each second
    once (``isoformat`` costs more than the rest of an event's timestamping): the cache holds the
    second's text as a template for the microseconds, and its fields for the datetime."""
    global _second
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second  # read once: another thread may replace it meanwhile
    if seconds != cached[0]:
        w = datetime.fromtimestamp(seconds, UTC)
        parts = (w.year, w.month, w.day, w.hour, w.minute, w.second)
        # YYYY-MM-DDTHH:MM:SS, then %06d for the microseconds
        cached = _second = (seconds, w.isoformat()[:19] + ".%06d+00:00", parts)
    _, template, fields = cached
    return template % micros, datetime(*fields, micros, UTC)


def utc_iso(moment: datetime) -> str:
    """One sortable text form for every stored time: UTC, microseconds, '+00:00'."""
    if moment.tzinfo is None:
        raise LedgerError(
            f"time {moment.isoformat()} has no timezone; pass an aware datetime (e.g. UTC)"
        )
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _check_id(what: str, value: str | None) -> None:
    if value is not None and not _id_match(value):
        raise LedgerError(
            f"{what} {value!r} is not a valid id: use 1-200 characters from letters, digits and ._:@+=- "
            "starting with a letter or digit"
        )


class Ledger(ABC):
    """An open ledger. Thread-safe; several processes may append to the same ledger at once."""

    _stores_index_columns = True
    """Whether ts, kind, run_id and session_id are written beside the body (and so must be checked
    against it), rather than derived from the body by the database."""
    _code_point_order = ""
    """What makes ``ORDER BY`` text follow code points (the order the replay merges in)."""
    _anchor: anchors.Anchor | None = None
    """The anchor file every append records its head in (see anchor.py); None: not anchored."""

    def __init__(self, url: str, connection: Any) -> None:
        self.url = url
        self._conn = connection
        self._lock = threading.Lock()  # the connection: one statement or transaction at a time
        self._queue_guard = threading.Lock()
        self._queue: deque[_Request] = deque()  # appends waiting for a commit, leader first
        self._create_schema()

    # -- backend hooks -------------------------------------------------------------------------

    @abstractmethod
    def _create_schema(self) -> None: ...

    @abstractmethod
    def _begin_write(self) -> None:
        """Start a transaction holding the ledger's write lock (appends are serialized)."""

    @abstractmethod
    def _begin_snapshot(self) -> None:
        """Start a read transaction that sees one consistent state of the ledger."""

    @abstractmethod
    def _in_transaction(self) -> bool: ...

    def _sql(self, statement: str) -> str:
        return statement

    def _scan_cursor(self, name: str = "ledger_verify_scan") -> Any:
        """A cursor for a long scan (``name`` tells several open at once apart)."""
        return self._conn.cursor()

    def _commit(self) -> None:
        self._execute("COMMIT")

    def _rollback(self) -> None:
        if self._in_transaction():
            self._execute("ROLLBACK")

    # -- plumbing ------------------------------------------------------------------------------

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        cur = self._conn.cursor()
        cur.execute(self._sql(statement), params)
        return cur

    def anchor_to(self, path: Path) -> None:
        """Record the head after every append in the anchor file at ``path`` (created if absent),
        and check the chain against it in :meth:`verify`."""
        self._anchor = anchors.Anchor(path)

    def _close_anchor(self) -> None:
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None

    def close(self) -> None:
        with self._lock:
            self._close_anchor()
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- writing -------------------------------------------------------------------------------

    def append(
        self,
        kind: EventKind | str,
        *,
        run_id: str | None = None,
        session_id: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> LedgerEvent:
        """Append one event; it is durable when this returns (see the backend for how durable).
        Threads appending at the same time share one commit (group commit)."""
        prepared = self._prepare(kind, run_id, session_id, {} if payload is None else payload)
        return self._commit_in_turn(_Request([prepared]))[0]

    def append_many(self, items: Iterable[NewEvent | tuple[Any, ...]]) -> list[LedgerEvent]:
        """Append events atomically: all of them or none, durable when this returns.
        Batching is how one writer reaches high rates (one commit per batch, not per event)."""
        prepare = self._prepare
        prepared = [
            prepare(*(item if type(item) is NewEvent else NewEvent(*item))) for item in items
        ]
        if not prepared:
            return []
        return self._commit_in_turn(_Request(prepared))

    def _commit_in_turn(self, request: _Request) -> list[LedgerEvent]:
        """Group commit: the request at the front of the queue leads. It commits everything queued
        behind it in one transaction, then wakes each of those (they return) and the request now at
        the front, which leads the next commit. Every thread is woken once per append."""
        queue, guard = self._queue, self._queue_guard
        if not queue and self._lock.acquire(blocking=False):
            # No commit under way and none waiting: this request commits alone, without queueing
            # (one that queues meanwhile leads the next commit once the lock is free).
            try:
                self._commit_group([request])
            finally:
                self._lock.release()
            if request.error is not None:
                raise request.error
            return request.events
        with guard:
            queue.append(request)
            leads = len(queue) == 1
            if not leads:  # woken only by a leader, which takes the queue under this guard
                request.arm()
        if not leads:
            request.wait()
        if not request.done:
            group: list[_Request] = []
            try:
                with self._lock:
                    with guard:  # all that queued while the connection was busy
                        group = list(queue)
                    self._commit_group(group)
            finally:
                with guard:
                    if not group:  # interrupted before it could commit: leave the queue
                        queue.remove(request)
                    for _ in group:
                        queue.popleft()
                    next_leader = queue[0] if queue else None
                if len(group) > 1:
                    for other in group:
                        if other is not request:
                            other.wake()
                if next_leader is not None:
                    next_leader.wake()
        if request.error is not None:
            raise request.error
        return request.events

    @staticmethod
    def _prepare(
        kind: EventKind | str, run_id: str | None, session_id: str | None, payload: Any
    ) -> _Prepared:
        try:
            known_kind = KINDS[kind]
        except (KeyError, TypeError):
            known = ", ".join(k.value for k in EventKind)
            raise LedgerError(f"unknown event kind {kind!r}; expected one of: {known}") from None
        if run_id is not None:
            _check_id("run id", run_id)
        elif known_kind in RUN_EVENT_KINDS:
            raise LedgerError(f"{known_kind.value} needs a run_id")
        if session_id is not None:
            _check_id("session id", session_id)
        elif known_kind in _SESSION_KINDS:
            raise LedgerError(f"{known_kind.value} needs a session_id")
        if type(payload) is not dict and not isinstance(payload, dict):
            raise LedgerError(
                f"payload of {known_kind.value} must be a dict, got {type(payload).__name__}"
            )
        return known_kind, run_id, session_id, validate_payload(known_kind, payload)

    def _commit_group(self, group: list[_Request]) -> None:
        """Write the queued requests at once; each gets its events or its error. A request refused
        on its own (a run submitted twice) is left out; the others are written."""
        try:
            self._write_group(group)
        except Exception as exc:
            for request in group:
                request.error = exc
        except BaseException:
            for request in group:
                request.error = LedgerError(
                    "the commit was interrupted; these events were not written (append them again)"
                )
            raise
        finally:
            for request in group:
                request.done = True

    def _write_group(self, group: list[_Request]) -> None:
        """Chain the requests onto the head and write them in one transaction of the database.
        A backend that acknowledges events before its tables hold them overrides this.

        With an anchor, this host's appenders take its lock from before the write lock to after
        their record, so the records follow the chain even though the commit releases the lock."""
        with self._anchor.locked() if self._anchor is not None else contextlib.nullcontext():
            try:
                self._begin_write()
                seq, prev = self._read_head()
                chained, _ = self._chain_group(
                    group, seq, prev, self._known_runs(_submitted_ids(group))
                )
                if chained:
                    self._store([entry for entries in chained for entry in entries])
                self._commit()
            except BaseException:
                self._rollback()
                raise
            if chained and self._anchor is not None:
                self._anchor.write(chained[-1][-1].seq, chained[-1][-1].digest)

    def _catch_up(self) -> None:  # noqa: B027 - a hook; most backends have nothing to do
        """Bring the tables up to date with every acknowledged event, before they are read. Here
        they always are; see ``SqliteLedger``."""

    def _chain_group(
        self, group: list[_Request], seq: int, prev: str, known: Container[str]
    ) -> tuple[list[list[Entry]], set[str]]:
        """Number and hash each request's events after (seq, prev), request after request; each
        request gets its events, or its error if it submits a run in ``known`` (runs that already
        have events) or one chained before it here. Returns the entries of each request that was
        not refused, and the runs they are about. ``known`` is not changed."""
        ts, moment = _now()
        chained: list[list[Entry]] = []
        runs: set[str] = set()
        for request in group:
            try:
                entries, events, its_runs = _chain(
                    request.prepared, seq, prev, ts, moment, known, runs
                )
            except LedgerError as exc:
                request.error = exc  # refused on its own: the rest of the group goes on
                continue
            seq, prev = entries[-1].seq, entries[-1].digest
            runs |= its_runs
            request.events = events
            chained.append(entries)
        return chained, runs

    def _known_runs(self, run_ids: set[str]) -> set[str]:
        """Those of ``run_ids`` that the run-state table has."""
        if len(run_ids) == 1:  # one submission per append: the common case, kept cheap
            (run_id,) = run_ids
            row = self._execute("SELECT 1 FROM ledger_runs WHERE run_id = ?", (run_id,)).fetchone()
            return run_ids if row else set()
        known: set[str] = set()
        ordered = sorted(run_ids)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            known.update(
                row[0]
                for row in self._execute(
                    f"SELECT run_id FROM ledger_runs WHERE run_id IN ({marks})", chunk
                ).fetchall()
            )
        return known

    def _store(self, entries: list[Entry]) -> None:
        """Insert chained events, fold them into the run states and move the head, inside the
        caller's transaction."""
        cur = self._conn.cursor()
        if self._stores_index_columns:
            cur.executemany(
                self._sql(
                    "INSERT INTO ledger_events (seq, body, hash, ts, kind, run_id, session_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                [
                    (e.seq, e.body, e.digest, e.ts, _KIND_TEXT[e.kind], e.run_id, e.session_id)
                    for e in entries
                ],
            )
        else:
            cur.executemany(
                self._sql("INSERT INTO ledger_events (seq, body, hash) VALUES (?, ?, ?)"),
                [(e.seq, e.body, e.digest) for e in entries],
            )
        # A run whose first event here is its run_submitted has no state yet (a second submission
        # is refused), so only the others are looked up.
        first_kinds: dict[str, EventKind] = {}
        for e in entries:
            if e.run_id is not None and e.kind in RUN_EVENT_KINDS:
                first_kinds.setdefault(e.run_id, e.kind)
        runs = self._load_docs(
            {run_id for run_id, kind in first_kinds.items() if kind is not EventKind.run_submitted}
        )
        self._fold_runs(
            (
                (e.seq, e.ts, e.kind, e.run_id, e.session_id, e.payload)
                for e in entries
                if e.run_id is not None and e.kind in RUN_EVENT_KINDS
            ),
            runs,
        )
        self._store_head(entries[-1].seq, entries[-1].digest)

    def _fold_runs(
        self,
        events: Iterable[tuple[int, str, EventKind, str, str | None, dict[str, Any]]],
        runs: dict[str, dict[str, Any] | None],
        load: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        """Fold run events (seq, ts, kind, run_id, session_id, payload) into the run states and
        write each changed run once. ``runs`` holds the states read so far (None: no state yet);
        a run missing from it is read with ``load``. The states are this fold's own copies, so
        each event changes its run's state in place."""
        for seq, ts, kind, run_id, session_id, payload in events:
            try:
                doc = runs[run_id]
            except KeyError:
                doc = None if kind is EventKind.run_submitted or load is None else load(run_id)
            runs[run_id] = fold_run(
                doc,
                seq=seq,
                ts=ts,
                kind=kind,
                run_id=run_id,
                session_id=session_id,
                payload=payload,
                in_place=True,
            )
        self._store_runs({run_id: doc for run_id, doc in runs.items() if doc is not None})

    def _store_head(self, seq: int, digest: str) -> None:
        self._execute(
            "INSERT INTO ledger_head (id, seq, hash) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (seq, digest),
        )

    def _load_docs(self, run_ids: set[str]) -> dict[str, dict[str, Any] | None]:
        """Current state of the given runs (None: not in the ledger yet), in few round trips."""
        docs: dict[str, dict[str, Any] | None] = dict.fromkeys(run_ids)
        ordered = sorted(run_ids)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for run_id, doc in self._execute(
                f"SELECT run_id, doc FROM ledger_runs WHERE run_id IN ({marks})", chunk
            ).fetchall():
                docs[run_id] = msgspec.json.decode(_text(doc))
        return docs

    def _store_runs(self, docs: dict[str, dict[str, Any]]) -> None:
        if not docs:
            return
        cur = self._conn.cursor()
        cur.executemany(
            self._sql(
                "INSERT INTO ledger_runs (run_id, experiment, state, session_id, submitted_at, first_seq, last_seq, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                "experiment = excluded.experiment, state = excluded.state, session_id = excluded.session_id, "
                "last_seq = excluded.last_seq, doc = excluded.doc"
            ),
            [
                (
                    run_id,
                    doc.get("experiment"),
                    doc["state"],
                    doc.get("session_id"),
                    doc["submitted_at"],
                    doc["first_seq"],
                    doc["last_seq"],
                    _ENCODER.encode(doc).decode(),
                )
                for run_id, doc in docs.items()
            ],
        )
        tags = [
            (tag, doc["first_seq"], run_id)
            for run_id, doc in docs.items()
            for tag in doc.get("tags", [])
        ]
        if tags:
            cur.executemany(
                self._sql(
                    "INSERT INTO ledger_run_tags (tag, first_seq, run_id) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING"
                ),
                tags,
            )

    # -- reading -------------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the latest event; (0, GENESIS_HASH) when empty. Keep it elsewhere to
        prove later that no events were cut from the end."""
        with self._lock:
            self._catch_up()
            return self._read_head()

    def _read_head(self) -> tuple[int, str]:
        row = self._execute("SELECT seq, hash FROM ledger_head WHERE id = 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def events(
        self,
        *,
        run_id: str | None = None,
        session_id: str | None = None,
        kind: EventKind | str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[LedgerEvent]:
        """Events in ledger order, optionally filtered."""
        where: list[str] = ["seq > ?"]
        params: list[Any] = [after_seq]
        for column, value in (("run_id", run_id), ("session_id", session_id), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(str(value))
        statement = f"SELECT body, hash FROM ledger_events WHERE {' AND '.join(where)} ORDER BY seq"
        if limit is not None:
            statement += " LIMIT ?"
            params.append(limit)
        with self._lock:
            self._catch_up()
            rows = self._execute(statement, params).fetchall()
        return [_event_from_row(_as_bytes(body), str(digest)) for body, digest in rows]

    def runs(
        self,
        experiment: str | None = None,
        tag: str | None = None,
        state: RunStatus | str | None = None,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[RunState]:
        """Runs in the order they first appeared. With ``limit``: the latest ``limit`` of them.
        ``since``/``until`` bound the time of the run's first event (``submitted_at``)."""
        where: list[str] = []
        params: list[Any] = []
        if state is not None:
            try:
                state = RunStatus(state)
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                raise LedgerError(
                    f"unknown run state {state!r}; expected one of: {known}"
                ) from None
        for column, value in (
            ("experiment", experiment),
            ("state", state),
            ("session_id", session_id),
        ):
            if value is not None:
                where.append(f"r.{column} = ?")
                params.append(str(value))
        if since is not None:
            where.append("r.submitted_at >= ?")
            params.append(utc_iso(since))
        if until is not None:
            where.append("r.submitted_at < ?")
            params.append(utc_iso(until))
        if tag is not None:
            # Walk the (tag, first_seq) index newest first, so "latest N with tag T" stops after N.
            statement = (
                "SELECT r.doc FROM ledger_run_tags t JOIN ledger_runs r ON r.run_id = t.run_id"
            )
            where.insert(0, "t.tag = ?")
            params.insert(0, tag)
            order = "t.first_seq"
        else:
            statement, order = "SELECT r.doc FROM ledger_runs r", "r.first_seq"
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += f" ORDER BY {order} DESC"
        if limit is not None:
            if limit < 0:
                raise LedgerError(f"limit must be >= 0, got {limit}")
            statement += " LIMIT ?"
            params.append(limit)
        with self._lock:
            self._catch_up()
            rows = self._execute(statement, params).fetchall()
        return [RunState.model_validate_json(_text(row[0])) for row in reversed(rows)]

    def run(self, run_id: str) -> RunState:
        """One run's current state; raises :class:`LedgerError` if the ledger has no such run."""
        with self._lock:
            self._catch_up()
            row = self._execute(
                "SELECT doc FROM ledger_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        if row is None:
            raise LedgerError(
                f"no run {run_id!r} in the ledger at {self.url} (`agentic-researcher ledger list` shows runs)"
            )
        return RunState.model_validate_json(_text(row[0]))

    # -- verification --------------------------------------------------------------------------

    def verify(self, head: tuple[int, str] | None = None) -> VerifyReport:
        """Walk the whole chain: every body hashes to its stored hash, names the previous event's hash,
        carries its own seq, and agrees with the indexed columns; the head names the last event.
        Detects edited, deleted, inserted and reordered events. Then replay the run events into
        the derived tables and compare (framework/ledger/replay.py), and check the chain against
        the heads kept outside the database: the anchor file's first and last records and
        ``head`` (a ``(seq, hash)`` the user kept), which catch a chain cut short or re-hashed.

        A fast pass proves an intact ledger (:meth:`_chain_intact`, and the indexed-columns check of
        :meth:`_start_columns_check` where the backend needs one); only when it finds anything wrong
        does the exact pass decode every event to name each problem."""
        started = time.perf_counter()
        with self._lock:
            problems: list[VerifyProblem] = []
            # Read before the tables are brought up to date: every record in it is then of an
            # event this snapshot holds, so a record past the snapshot's end is a cut.
            kept = self._kept_heads(head, problems)
            try:
                self._catch_up()
            except LedgerError as exc:  # events the tables do not have yet are damaged
                problems.append(VerifyProblem(seq=None, problem=str(exc)))
            self._begin_snapshot()
            try:
                columns = self._start_columns_check()
                chain = self._chain_intact()
                if chain is not None and columns() and chain[1:] == self._read_head():
                    count, last_seq, last_hash = chain
                else:
                    count, last_seq, last_hash, found = self._exact_verify(self._read_head())
                    problems[:0] = found
                for what, seq, digest in kept:
                    problem = self._kept_head_problem(what, seq, digest, last_seq)
                    if problem is not None:
                        problems.append(VerifyProblem(seq=seq, problem=problem))
                runs, run_problems = self._derived_problems(MAX_PROBLEMS)
                problems += run_problems
            finally:
                self._rollback()
        return VerifyReport(
            ok=not problems,
            events=count,
            head_seq=last_seq,
            head_hash=last_hash,
            problems=problems,
            runs=runs,
            anchor=str(self._anchor.path) if self._anchor is not None else None,
            anchored=sorted({seq for _, seq, _ in kept}),
            seconds=time.perf_counter() - started,
        )

    def _kept_heads(
        self, head: tuple[int, str] | None, problems: list[VerifyProblem]
    ) -> list[tuple[str, int, str]]:
        """(where it was kept, seq, hash) of each head to check the chain against."""
        kept: list[tuple[str, int, str]] = []
        if self._anchor is not None:
            state = anchors.read(self._anchor.path)
            if state.damaged:
                problems.append(VerifyProblem(seq=None, problem=state.damaged))
            for name, record in (("first", state.first), ("last", state.last)):
                if record is not None and (not kept or kept[-1][1:] != record):
                    kept.append((f"the {name} record of the anchor file {state.path}", *record))
        if head is not None:
            kept.append(("the head you gave", *head))
        return kept

    def _kept_head_problem(self, what: str, seq: int, digest: str, last_seq: int) -> str | None:
        if seq == 0:
            return (
                None
                if digest == GENESIS_HASH
                else f"{what} is seq 0 with a hash that is not genesis"
            )
        if seq > last_seq:
            return (
                f"{what} is seq {seq}, but the ledger ends at seq {last_seq}: events were cut "
                "from the end (the head may have been edited to hide it)"
            )
        row = self._execute("SELECT hash FROM ledger_events WHERE seq = ?", (seq,)).fetchone()
        if row is None or row[0] != digest:
            return (
                f"{what} is seq {seq} with hash {digest}, but the ledger's event {seq} has "
                f"{'none' if row is None else 'hash ' + str(row[0])}: the chain was rewritten "
                "(re-hashed) at or before that event"
            )
        return None

    def _derived_problems(self, limit: int) -> tuple[int, list[VerifyProblem]]:
        """Replay the run events into the runs and tags tables and compare (see replay.py)."""
        from framework.ledger.replay import derived_problems

        order = self._code_point_order
        cursors = [
            self._scan_cursor(f"ledger_verify_{name}") for name in ("events", "runs", "tags")
        ]
        try:
            events, runs, tags = cursors
            events.execute(
                "SELECT run_id, seq, body FROM ledger_events WHERE run_id IS NOT NULL "
                f"ORDER BY run_id{order}, seq"
            )
            runs.execute(
                "SELECT run_id, experiment, state, session_id, submitted_at, first_seq, last_seq, "
                f"doc FROM ledger_runs ORDER BY run_id{order}"
            )
            tags.execute(
                "SELECT run_id, tag, first_seq FROM ledger_run_tags "
                f"ORDER BY run_id{order}, tag{order}, first_seq"
            )
            return derived_problems(events, runs, tags, limit)
        finally:
            for cursor in cursors:
                cursor.close()

    def _chain_intact(self) -> tuple[int, int, str] | None:
        """(events, last seq, last hash) if every body hashes to its hash, seqs run 1, 2, 3, ...
        and each body names the previous hash (see :func:`framework.ledger.chain.walk`); None at the
        first thing that is not so. A backend may hand the second half to a helper process."""
        last = int(self._execute("SELECT coalesce(max(seq), 0) FROM ledger_events").fetchone()[0])
        helper = self._split_chain(last)
        own_last = helper.first_seq - 1 if helper else last
        # Seqs are unique integers (the primary key): as many rows as seqs in 1..own_last, and
        # none below 1, means every seq is there once (walk counts the rows).
        lowest = self._execute("SELECT min(seq) FROM ledger_events").fetchone()[0]
        end = None
        if lowest is None or lowest >= 1:
            cur = self._scan_cursor()
            try:
                cur.execute(
                    self._sql("SELECT body, hash FROM ledger_events WHERE seq <= ? ORDER BY seq"),
                    (own_last,),
                )
                end = walk(cur, GENESIS_HASH)
            finally:
                cur.close()
        if end is None or end[0] != own_last:
            if helper:
                helper.cancel()
            return None
        if helper:
            helper_end = helper.result()
            if helper_end is None:
                return None
            end = helper_end
        return end[0], end[0], end[1]

    def _split_chain(self, last_seq: int) -> ChainHelper | None:
        """Start walking the end of the chain elsewhere (None: this backend walks it all here)."""
        return None

    _columns_sql = (
        "SELECT count(*) FROM ledger_events WHERE "
        "json_extract(CAST(body AS TEXT), '$.seq') IS NOT seq "
        "OR json_extract(CAST(body AS TEXT), '$.ts') IS NOT ts "
        "OR json_extract(CAST(body AS TEXT), '$.kind') IS NOT kind "
        "OR json_extract(CAST(body AS TEXT), '$.run_id') IS NOT run_id "
        "OR json_extract(CAST(body AS TEXT), '$.session_id') IS NOT session_id"
    )

    def _start_columns_check(self) -> Callable[[], bool]:
        """Start checking that the indexed columns equal the fields in each hashed body; the returned
        function waits for the answer. Here it runs on this connection when asked; backends that can
        run it elsewhere while the chain is walked override this."""

        def columns_agree() -> bool:
            try:
                return int(self._execute(self._columns_sql).fetchone()[0]) == 0
            except Exception:  # a body that is not JSON: the exact pass says which
                self._rollback()
                self._begin_snapshot()
                return False

        return columns_agree

    def _exact_verify(self, head: tuple[int, str]) -> tuple[int, int, str, list[VerifyProblem]]:
        problems: list[VerifyProblem] = []
        expected_seq, prev, count = 1, GENESIS_HASH, 0
        for seq, ts, kind, run_id, session_id, body, digest in self._scan():
            count += 1
            problem = _event_problem(
                expected_seq, prev, seq, (ts, kind, run_id, session_id), _as_bytes(body), digest
            )
            if problem is not None and len(problems) < MAX_PROBLEMS:
                problems.append(VerifyProblem(seq=seq, problem=problem))
            expected_seq, prev = seq + 1, digest
        if head != (expected_seq - 1, prev):
            problems.append(
                VerifyProblem(
                    seq=None,
                    problem=f"the recorded head is seq {head[0]} but the last event is seq {expected_seq - 1} "
                    "with a different hash (events were cut from the end or the head was edited)",
                )
            )
        return count, expected_seq - 1, prev, problems

    def _scan(self) -> Iterator[tuple[Any, ...]]:
        cur = self._scan_cursor()
        cur.execute(
            "SELECT seq, ts, kind, run_id, session_id, body, hash FROM ledger_events ORDER BY seq"
        )
        try:
            while batch := cur.fetchmany(10_000):
                yield from batch
        finally:
            cur.close()


def _event_problem(
    expected_seq: int,
    prev: str,
    seq: int,
    columns: tuple[Any, ...],
    body: bytes,
    digest: Any,
) -> str | None:
    """What is wrong with one stored event, in order of what an edit breaks first."""
    if hashlib.sha256(body).hexdigest() != digest:
        return "content does not match its hash (the event was edited)"
    try:
        env = ENVELOPE.decode(body)
    except msgspec.DecodeError as exc:
        return f"body is not a valid event ({exc})"
    if env.seq != seq:
        return f"stored at seq {seq} but its content says seq {env.seq} (moved or reordered)"
    if seq != expected_seq:
        return f"expected seq {expected_seq} next, found {seq} (events {expected_seq}..{seq - 1} are missing)"
    if env.prev_hash != prev:
        return "does not chain to the event before it (an event before it was removed, inserted or replaced)"
    if (env.ts, env.kind, env.run_id, env.session_id) != columns:
        return "indexed columns (ts, kind, run_id, session_id) differ from its hashed content"
    return None


def _as_bytes(value: Any) -> bytes:
    """Event bodies are stored as bytes; a raw edit may have turned one into text."""
    return value.encode() if isinstance(value, str) else bytes(value)


def _text(value: Any) -> str | bytes:
    return bytes(value) if isinstance(value, memoryview) else value


def _event_from_row(body: bytes, digest: str) -> LedgerEvent:
    data = msgspec.json.decode(body)
    return LedgerEvent(
        seq=data["seq"],
        ts=data["ts"],
        kind=data["kind"],
        run_id=data["run_id"],
        session_id=data["session_id"],
        payload=data["payload"],
        prev_hash=data["prev_hash"],
        hash=digest,
    )


def open_ledger(url: str, state_dir: Path | None = None) -> Ledger:
    """Open (creating if needed) the ledger at ``url``: ``sqlite:///abs/path.sqlite`` (optionally
    ``?sync=full``, see ``framework.ledger.sqlite``) or ``postgresql://user@host/dbname``.

    Its anchor (anchor.py) is the file beside an SQLite database; a PostgreSQL ledger is anchored
    in ``state_dir`` (without one, it is not anchored)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    ledger: Ledger
    if scheme == "sqlite":
        from framework.ledger.sqlite import SqliteLedger

        ledger = SqliteLedger.open(url)
    elif scheme in ("postgresql", "postgres"):
        from framework.ledger.postgres import PostgresLedger

        ledger = PostgresLedger.open(url)
    else:
        raise LedgerError(
            f"ledger URL {url!r} is not supported: use sqlite:///ABSOLUTE/PATH.sqlite or "
            "postgresql://USER@HOST/DBNAME (set ledger.url in config.toml, or AR_LEDGER__URL)"
        )
    path = anchors.anchor_path(url, state_dir)
    if path is not None:
        ledger.anchor_to(path)
    return ledger
