"""Replaying the events into the derived tables, to check what ``list``, ``show`` and ``export``
read: the runs table (each run's document and its indexed columns) and the tags table.

The hash chain proves the events; nothing proves the tables folded from them, which anyone who can
write the database can edit (a forged metric in ``ledger_runs.doc`` passed verify and ``show``
printed it). Here every run's events are folded again, exactly as appends fold them
(:func:`framework.ledger.models.fold_run`), and compared with the stored rows.

Runs are streamed one at a time: the events ordered by (run id, seq), the runs and tags tables by
run id, merged, so memory holds one run, not the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

import msgspec

from framework.ledger.models import RUN_EVENT_KINDS, VerifyProblem, fold_run
from framework.ledger.tail import STORED

_KINDS = {kind.value: kind for kind in RUN_EVENT_KINDS}
_ENCODER = msgspec.json.Encoder(order="sorted")
_COLUMNS = ("experiment", "state", "session_id", "submitted_at", "first_seq", "last_seq")

EventRow = tuple[str, int, Any]
"""(run id, seq, body) of an event that names a run, in (run id, seq) order."""
RunRow = tuple[Any, ...]
"""(run id, experiment, state, session id, submitted at, first seq, last seq, doc)."""
TagRow = tuple[str, str, int]
"""(run id, tag, first seq)."""


def replayed_runs(events: Iterable[EventRow]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each run's state folded from its events (plain JSON values, as the bodies decode)."""
    decode, kinds = STORED.decode, _KINDS
    run_id: str | None = None
    doc: dict[str, Any] | None = None
    for event_run, seq, body in events:
        if event_run != run_id:
            if doc is not None:
                yield run_id, doc  # type: ignore[misc]  # set together with doc
            run_id, doc = event_run, None
        try:
            event = decode(body if isinstance(body, bytes | str) else bytes(body))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # not an event body: the chain check names it
        kind = kinds.get(event.kind)
        if kind is None:
            continue  # an event that names a run without being one of its lifecycle events
        doc = fold_run(
            doc,
            seq=seq,
            ts=event.ts,
            kind=kind,
            run_id=event_run,
            session_id=event.session_id,
            payload=event.payload,
            in_place=True,
        )
    if doc is not None:
        yield run_id, doc  # type: ignore[misc]


def derived_problems(
    events: Iterable[EventRow], runs: Iterable[RunRow], tags: Iterable[TagRow], limit: int
) -> tuple[int, list[VerifyProblem]]:
    """(runs checked, what differs): rows no event accounts for, runs whose row is missing, and
    every field of a document, indexed column or tag that the events do not give. Each input is
    sorted by run id in code-point order (the same order for all three)."""
    tag_sets = (
        (run_id, {(tag, first_seq) for _, tag, first_seq in rows})
        for run_id, rows in groupby(tags, key=itemgetter(0))
    )
    problems: list[VerifyProblem] = []
    checked = 0
    encode = _ENCODER.encode
    for run_id, derived, row, tagged in _merged(replayed_runs(events), iter(runs), tag_sets):
        checked += 1
        if (
            derived is not None
            and row is not None
            and encode(derived) == _as_bytes(row[7])
            and row[1:7] == tuple(derived.get(name) for name in _COLUMNS)
            and tagged == {(tag, derived["first_seq"]) for tag in derived.get("tags", ())}
        ):
            continue  # the common case, decided without decoding the stored document
        for problem in _run_problems(derived, row, tagged):
            if len(problems) < limit:
                problems.append(VerifyProblem(seq=None, run_id=run_id, problem=problem))
    return checked, problems


def _merged(
    replayed: Iterator[tuple[str, dict[str, Any]]],
    runs: Iterator[RunRow],
    tags: Iterator[tuple[str, set[tuple[str, int]]]],
) -> Iterator[tuple[str, dict[str, Any] | None, RunRow | None, set[tuple[str, int]]]]:
    """The three streams side by side, one run id at a time (a missing side: None, or no tags).
    The stored rows may hold any text as a run id, so the end of a stream is None, never a
    stand-in id that something could sort after."""
    derived, row, tagged = next(replayed, None), next(runs, None), next(tags, None)
    while derived is not None or row is not None or tagged is not None:
        run_id = min(item[0] for item in (derived, row, tagged) if item is not None)
        this_derived = this_row = None
        this_tags: set[tuple[str, int]] = set()
        if derived is not None and derived[0] == run_id:
            this_derived, derived = derived[1], next(replayed, None)
        if row is not None and row[0] == run_id:
            this_row, row = row, next(runs, None)
        if tagged is not None and tagged[0] == run_id:
            this_tags, tagged = tagged[1], next(tags, None)
        yield run_id, this_derived, this_row, this_tags


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _run_problems(
    derived: dict[str, Any] | None,
    row: RunRow | None,
    tags: set[tuple[str, int]],
) -> Iterator[str]:
    if derived is None:
        if row is not None:
            yield "the runs table has this run, but no event does (the row was added or edited)"
        if tags:
            yield "the tags table tags this run, but no event does (the rows were added)"
        return
    if row is None:
        yield "its events are in the ledger, but the runs table has no row for it (deleted)"
        return
    try:
        stored = msgspec.json.decode(row[7])
    except msgspec.DecodeError:
        yield "its row in the runs table is not a valid run document (edited)"
        stored = {}
    if stored and stored != derived:
        fields = sorted(k for k in set(stored) | set(derived) if stored.get(k) != derived.get(k))
        yield (
            f"the runs table says {_shown(stored, fields)} but its events say "
            f"{_shown(derived, fields)} (the row was edited)"
        )
    columns = {name: row[i] for i, name in enumerate(_COLUMNS, 1)}
    wrong = [name for name, value in columns.items() if value != derived.get(name)]
    if wrong:
        yield (
            f"the runs table's indexed {', '.join(wrong)} "
            f"({', '.join(repr(columns[n]) for n in wrong)}) differ from its events' "
            f"({', '.join(repr(derived.get(n)) for n in wrong)}); filters would find it wrongly"
        )
    expected = {(tag, derived["first_seq"]) for tag in derived.get("tags", [])}
    if tags != expected:
        yield (
            f"the tags table has {sorted(tags)} for it, its events give {sorted(expected)} "
            "(rows were added or removed)"
        )


def _shown(doc: dict[str, Any], fields: list[str]) -> str:
    text = ", ".join(f"{name}={doc.get(name)!r}" for name in fields)
    return text if len(text) <= 300 else text[:300] + "..."
