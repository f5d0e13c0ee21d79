"""The append-only event store with its hash chain and the materialized run-state table.

Each backend (``sqlite.py``, ``postgres.py``) supplies a DB-API connection, its schema and how it
takes the ledger's write lock; everything else (chaining, folding, queries, verification) lives
here once. SQL is written with ``?`` placeholders; backends with another paramstyle translate.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec

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


class NewEvent(NamedTuple):
    """An event to append (the ledger assigns seq, ts and hashes)."""

    kind: EventKind | str
    run_id: str | None = None
    session_id: str | None = None
    payload: dict[str, Any] = {}  # noqa: RUF012 - NamedTuple defaults are never mutated here


class _Envelope(msgspec.Struct):
    """The chained fields of an event body, decoded without its payload (for fast verification)."""

    seq: int
    ts: str
    kind: str
    run_id: str | None
    session_id: str | None
    prev_hash: str


_ENVELOPE = msgspec.json.Decoder(_Envelope)
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


def utc_iso(moment: datetime) -> str:
    """One sortable text form for every stored time: UTC, microseconds, '+00:00'."""
    if moment.tzinfo is None:
        raise LedgerError(
            f"time {moment.isoformat()} has no timezone; pass an aware datetime (e.g. UTC)"
        )
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _check_id(what: str, value: str | None) -> None:
    if value is not None and not _ID_PATTERN.fullmatch(value):
        raise LedgerError(
            f"{what} {value!r} is not a valid id: use 1-200 characters from letters, digits and ._:@+=- "
            "starting with a letter or digit"
        )


class Ledger(ABC):
    """An open ledger. Thread-safe; several processes may append to the same ledger at once."""

    paramstyle_qmark = True

    def __init__(self, url: str, connection: Any) -> None:
        self.url = url
        self._conn = connection
        self._lock = threading.Lock()
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

    def _scan_cursor(self) -> Any:
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

    def close(self) -> None:
        with self._lock:
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
        """Append one event; it is durable (committed and synced) when this returns."""
        return self.append_many([NewEvent(kind, run_id, session_id, payload or {})])[0]

    def append_many(self, items: Iterable[NewEvent | tuple[Any, ...]]) -> list[LedgerEvent]:
        """Append events in one transaction: all of them or none, durable when this returns.
        Batching is how writers reach high rates (one sync per batch, not per event)."""
        prepared = [self._prepare(NewEvent(*item)) for item in items]
        if not prepared:
            return []
        with self._lock:
            try:
                self._begin_write()
                events = self._write(prepared)
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return events

    @staticmethod
    def _prepare(item: NewEvent) -> tuple[EventKind, str | None, str | None, dict[str, Any]]:
        try:
            kind = EventKind(item.kind)
        except ValueError:
            known = ", ".join(k.value for k in EventKind)
            raise LedgerError(
                f"unknown event kind {item.kind!r}; expected one of: {known}"
            ) from None
        _check_id("run id", item.run_id)
        _check_id("session id", item.session_id)
        if kind in RUN_EVENT_KINDS and item.run_id is None:
            raise LedgerError(f"{kind.value} needs a run_id")
        if kind in (EventKind.session_started, EventKind.session_ended) and item.session_id is None:
            raise LedgerError(f"{kind.value} needs a session_id")
        if not isinstance(item.payload, dict):
            raise LedgerError(
                f"payload of {kind.value} must be a dict, got {type(item.payload).__name__}"
            )
        return kind, item.run_id, item.session_id, validate_payload(kind, item.payload)

    def _write(
        self, prepared: list[tuple[EventKind, str | None, str | None, dict[str, Any]]]
    ) -> list[LedgerEvent]:
        row = self._execute("SELECT seq, hash FROM ledger_head WHERE id = 1").fetchone()
        seq, prev = (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)
        ts = utc_iso(datetime.now(UTC))
        rows: list[tuple[Any, ...]] = []
        events: list[LedgerEvent] = []
        runs = self._load_docs(
            {run_id for kind, run_id, _, _ in prepared if run_id and kind in RUN_EVENT_KINDS}
        )
        for kind, run_id, session_id, payload in prepared:
            seq += 1
            body = canonical_body(
                seq=seq,
                ts=ts,
                kind=kind.value,
                run_id=run_id,
                session_id=session_id,
                payload=payload,
                prev_hash=prev,
            )
            digest = hashlib.sha256(body).hexdigest()
            rows.append((seq, ts, kind.value, run_id, session_id, body, digest))
            events.append(
                LedgerEvent.model_construct(
                    seq=seq,
                    ts=datetime.fromisoformat(ts),
                    kind=kind,
                    run_id=run_id,
                    session_id=session_id,
                    payload=payload,
                    prev_hash=prev,
                    hash=digest,
                )
            )
            prev = digest
            if kind in RUN_EVENT_KINDS:
                assert run_id is not None
                if kind is EventKind.run_submitted and runs[run_id] is not None:
                    raise LedgerError(
                        f"run {run_id!r} is already in the ledger; a run is submitted once (use a new run id)"
                    )
                runs[run_id] = fold_run(
                    runs[run_id],
                    seq=seq,
                    ts=ts,
                    kind=kind,
                    run_id=run_id,
                    session_id=session_id,
                    payload=payload,
                )
        cur = self._conn.cursor()
        cur.executemany(
            self._sql(
                "INSERT INTO ledger_events (seq, ts, kind, run_id, session_id, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            rows,
        )
        self._store_runs({k: v for k, v in runs.items() if v is not None})
        self._execute(
            "INSERT INTO ledger_head (id, seq, hash) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (seq, prev),
        )
        return events

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
            rows = self._execute(statement, params).fetchall()
        return [RunState.model_validate_json(_text(row[0])) for row in reversed(rows)]

    def run(self, run_id: str) -> RunState:
        """One run's current state; raises :class:`LedgerError` if the ledger has no such run."""
        with self._lock:
            row = self._execute(
                "SELECT doc FROM ledger_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        if row is None:
            raise LedgerError(
                f"no run {run_id!r} in the ledger at {self.url} (`agentic-researcher ledger list` shows runs)"
            )
        return RunState.model_validate_json(_text(row[0]))

    # -- verification --------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Walk the whole chain: every body hashes to its stored hash, names the previous event's hash,
        carries its own seq, and agrees with the indexed columns; the head names the last event.
        Detects edited, deleted, inserted and reordered events."""
        started = time.perf_counter()
        problems: list[VerifyProblem] = []
        expected_seq, prev, count = 1, GENESIS_HASH, 0
        with self._lock:
            self._begin_snapshot()
            try:
                head_row = self._execute(
                    "SELECT seq, hash FROM ledger_head WHERE id = 1"
                ).fetchone()
                for seq, ts, kind, run_id, session_id, body, digest in self._scan():
                    count += 1
                    body = _as_bytes(body)
                    problem = None
                    if hashlib.sha256(body).hexdigest() != digest:
                        problem = "content does not match its hash (the event was edited)"
                    else:
                        try:
                            env = _ENVELOPE.decode(body)
                        except msgspec.DecodeError as exc:
                            env, problem = None, f"body is not a valid event ({exc})"
                        if env is not None:
                            if env.seq != seq:
                                problem = f"stored at seq {seq} but its content says seq {env.seq} (moved or reordered)"
                            elif seq != expected_seq:
                                problem = f"expected seq {expected_seq} next, found {seq} (events {expected_seq}..{seq - 1} are missing)"
                            elif env.prev_hash != prev:
                                problem = "does not chain to the event before it (an event before it was removed, inserted or replaced)"
                            elif (env.ts, env.kind, env.run_id, env.session_id) != (
                                ts,
                                kind,
                                run_id,
                                session_id,
                            ):
                                problem = "indexed columns (ts, kind, run_id, session_id) differ from its hashed content"
                    if problem is not None and len(problems) < MAX_PROBLEMS:
                        problems.append(VerifyProblem(seq=seq, problem=problem))
                    expected_seq, prev = seq + 1, digest
            finally:
                self._rollback()
        head_seq, head_hash = (
            (int(head_row[0]), str(head_row[1])) if head_row else (0, GENESIS_HASH)
        )
        if (head_seq, head_hash) != (expected_seq - 1, prev):
            problems.append(
                VerifyProblem(
                    seq=None,
                    problem=f"the recorded head is seq {head_seq} but the last event is seq {expected_seq - 1} "
                    "with a different hash (events were cut from the end or the head was edited)",
                )
            )
        return VerifyReport(
            ok=not problems,
            events=count,
            head_seq=expected_seq - 1,
            head_hash=prev,
            problems=problems,
            seconds=time.perf_counter() - started,
        )

    def _scan(self) -> Iterator[tuple[Any, ...]]:
        cur = self._scan_cursor()
        cur.execute(
            "SELECT seq, ts, kind, run_id, session_id, body, hash FROM ledger_events ORDER BY seq"
        )
        while batch := cur.fetchmany(10_000):
            yield from batch


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


def open_ledger(url: str) -> Ledger:
    """Open (creating if needed) the ledger at ``url``: ``sqlite:///abs/path.sqlite`` or
    ``postgresql://user@host/dbname``."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from framework.ledger.sqlite import SqliteLedger

        return SqliteLedger.open(url)
    if scheme in ("postgresql", "postgres"):
        from framework.ledger.postgres import PostgresLedger

        return PostgresLedger.open(url)
    raise LedgerError(
        f"ledger URL {url!r} is not supported: use sqlite:///ABSOLUTE/PATH.sqlite or "
        "postgresql://USER@HOST/DBNAME (set ledger.url in config.toml, or AR_LEDGER__URL)"
    )
