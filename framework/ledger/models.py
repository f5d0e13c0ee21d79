"""Ledger records: event kinds, the fields a run event may carry, stored events, and run state.

Events are the source of truth; :class:`RunState` is a view folded from them (see
:func:`fold_run`). Payloads of run events are validated against :class:`RunFields` so a typo in a
field name is an error at the writer, not a silently lost value.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

GENESIS_HASH = "0" * 64


class EventKind(StrEnum):
    run_submitted = "run_submitted"
    run_started = "run_started"
    run_finished = "run_finished"
    run_failed = "run_failed"
    run_cancelled = "run_cancelled"
    session_started = "session_started"
    session_ended = "session_ended"
    audit_done = "audit_done"
    request_rejected = "request_rejected"
    """A ``remote-run`` request the broker refused (nothing ran); not a run event."""
    evaluation_diverged = "evaluation_diverged"
    """The workspace's protected paths differ from the session's pristine copy (at a submit or at
    session end; see framework/evaluation.py); not a run event."""
    git_indirection_planted = "git_indirection_planted"
    """At session end the repository held something the user's own git would follow to another
    config or a program (framework/gitplanted.py); not a run event."""


RUN_EVENT_KINDS = frozenset(
    {
        EventKind.run_submitted,
        EventKind.run_started,
        EventKind.run_finished,
        EventKind.run_failed,
        EventKind.run_cancelled,
    }
)


class RunStatus(StrEnum):
    submitted = "submitted"
    running = "running"
    finished = "finished"
    failed = "failed"
    cancelled = "cancelled"


STATUS_AFTER: dict[EventKind, RunStatus] = {
    EventKind.run_submitted: RunStatus.submitted,
    EventKind.run_started: RunStatus.running,
    EventKind.run_finished: RunStatus.finished,
    EventKind.run_failed: RunStatus.failed,
    EventKind.run_cancelled: RunStatus.cancelled,
}


class LedgerError(RuntimeError):
    """A ledger operation failed; the message says which input was wrong and what to do."""


class GpuAllocation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="e.g. 'NVIDIA H100 80GB HBM3'")
    count: int = Field(default=0, ge=0)


class RunFields(BaseModel):
    """What a run event may say about its run. Every field is optional: each event adds what it knows
    (submit: experiment, argv, params, commit; start: nodes, GPUs, Slurm id; finish: exit, metrics).
    Later events overwrite earlier values of the same field; ``tags`` and ``artifacts`` accumulate."""

    model_config = ConfigDict(extra="forbid")

    experiment: str | None = None
    argv: list[str] | None = None
    params: dict[str, Any] | None = None
    git_commit: str | None = None
    diff_hash: str | None = None
    executor: str | None = Field(default=None, description="'local' or 'slurm'")
    slurm_job_id: str | None = None
    array_index: int | None = None
    nodes: list[str] | None = None
    gpus: GpuAllocation | None = None
    resources: dict[str, Any] | None = Field(default=None, description="what was requested")
    run_dir: str | None = None
    started_at: datetime | None = Field(default=None, description="default: time of run_started")
    ended_at: datetime | None = Field(default=None, description="default: time of the final event")
    exit_code: int | None = None
    reason: str | None = Field(default=None, description="why it failed or was cancelled")
    metrics: dict[str, Any] | None = None
    artifacts: list[str] | None = None
    tags: list[str] | None = None
    extra: dict[str, Any] | None = Field(default=None, description="free-form, for anything else")


RunSpec = RunFields
"""The payload of ``run_submitted``: the same fields, by convention the ones known at submit time."""


class LedgerEvent(BaseModel):
    """One stored event. ``hash`` = sha256 of the canonical JSON of the other fields (which include
    ``prev_hash``, the hash of the event before it)."""

    model_config = ConfigDict(frozen=True)

    seq: int
    ts: datetime
    kind: EventKind
    run_id: str | None = None
    session_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str

    @classmethod
    def written(
        cls,
        seq: int,
        ts: datetime,
        kind: EventKind,
        run_id: str | None,
        session_id: str | None,
        payload: dict[str, Any],
        prev_hash: str,
        digest: str,
    ) -> LedgerEvent:
        """An event the ledger has just built from validated parts. Skips validation, and even
        ``model_construct`` (which costs more than hashing and encoding the event): it sets the
        instance state the way ``model_construct`` does (tests/unit/test_ledger.py checks that the
        result equals a validated event)."""
        event = object.__new__(cls)
        _set(
            event,
            "__dict__",
            {
                "seq": seq,
                "ts": ts,
                "kind": kind,
                "run_id": run_id,
                "session_id": session_id,
                "payload": payload,
                "prev_hash": prev_hash,
                "hash": digest,
            },
        )
        _set(event, "__pydantic_fields_set__", set(_EVENT_FIELDS))
        _set(event, "__pydantic_extra__", None)
        _set(event, "__pydantic_private__", None)
        return event


_set = object.__setattr__
_EVENT_FIELDS = frozenset(LedgerEvent.model_fields)
# Plain strings for the append hot path (an enum's ``.value`` is a slow property lookup).
_STATE_TEXT: dict[EventKind, str] = {
    kind: str(status.value) for kind, status in STATUS_AFTER.items()
}


class RunState(BaseModel):
    """The current state of one run, folded from its events in ledger order."""

    run_id: str
    state: RunStatus
    experiment: str | None = None
    argv: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    git_commit: str | None = None
    diff_hash: str | None = None
    executor: str | None = None
    slurm_job_id: str | None = None
    array_index: int | None = None
    nodes: list[str] = Field(default_factory=list)
    gpus: GpuAllocation = Field(default_factory=GpuAllocation)
    resources: dict[str, Any] = Field(default_factory=dict)
    run_dir: str | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = None
    first_seq: int
    last_seq: int


class VerifyProblem(BaseModel):
    seq: int | None = Field(
        description="the event where the chain broke (None: the ledger as a whole, or a run)"
    )
    problem: str
    run_id: str | None = Field(
        default=None, description="the run whose derived rows disagree with its events"
    )


class VerifyReport(BaseModel):
    ok: bool
    events: int = Field(description="events checked")
    head_seq: int | None = None
    head_hash: str | None = None
    problems: list[VerifyProblem] = Field(default_factory=list)
    runs: int = Field(default=0, description="runs whose derived rows were replayed and checked")
    anchor: str | None = Field(default=None, description="the anchor file checked (None: none)")
    anchored: list[int] = Field(
        default_factory=list, description="the seqs checked against a kept head (anchor, --head)"
    )
    seconds: float = 0.0


def validate_payload(kind: EventKind, payload: dict[str, Any]) -> dict[str, Any]:
    """Check a payload at the write boundary; return it as plain JSON-able data (a new dict, for
    run events). :class:`RunFields` is the schema: a payload whose every field already has the
    plain JSON form of its type (:func:`_plain_copy`, derived from the field annotations) is copied
    as is; any other one (a datetime, a nested model, a wrong type, an unknown field) goes through
    pydantic, which converts it or says what is wrong. Both give the same result where both apply
    (tests/unit/test_ledger.py checks that)."""
    if kind not in RUN_EVENT_KINDS:
        return payload
    plain = _plain_copy(payload)
    return plain if plain is not None else _validated(kind, payload)


def _validated(kind: EventKind, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload validated and dumped by pydantic (``RunFields``, JSON mode, only the fields set)."""
    try:
        fields = _RUN_FIELDS_VALIDATOR.validate_python(payload)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: "
            + (
                "unknown field (put free-form data under 'extra')"
                if err["type"] == "extra_forbidden"
                else err["msg"]
            )
            for err in exc.errors()
        )
        raise LedgerError(f"invalid payload for {kind.value}: {details}") from None
    data: dict[str, Any] = _RUN_FIELDS_SERIALIZER.to_python(fields, mode="json", exclude_unset=True)
    return data


# What ``RunFields.model_validate`` / ``model_dump`` call, without their per-call wrapper cost.
_RUN_FIELDS_VALIDATOR = RunFields.__pydantic_validator__
_RUN_FIELDS_SERIALIZER = RunFields.__pydantic_serializer__

_NOT_PLAIN = object()


def _json_copy(value: Any) -> Any:
    """A copy of JSON data made of exactly dict (str keys), list, str, int, bool, finite float and
    None, which pydantic's JSON mode returns unchanged; :data:`_NOT_PLAIN` for anything else
    (a tuple, a datetime, a str subclass, inf...), which pydantic converts."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if value - value == 0 else _NOT_PLAIN  # inf and nan are not JSON
    if kind is list:
        items = [_json_copy(item) for item in value]
        return _NOT_PLAIN if _NOT_PLAIN in items else items
    if kind is dict:
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                return _NOT_PLAIN
            item = _json_copy(item)
            if item is _NOT_PLAIN:
                return _NOT_PLAIN
            copy[key] = item
        return copy
    return _NOT_PLAIN


def _plain_str(value: Any) -> Any:
    return value if type(value) is str else _NOT_PLAIN


def _plain_int(value: Any) -> Any:
    return value if type(value) is int else _NOT_PLAIN


def _plain_str_list(value: Any) -> Any:
    if type(value) is list:
        for item in value:
            if type(item) is not str:
                return _NOT_PLAIN
        return value.copy()
    return _NOT_PLAIN


def _plain_json_dict(value: Any) -> Any:
    """A copy of a dict of JSON data (see :func:`_json_copy`), with flat str/int values inline."""
    if type(value) is not dict:
        return _NOT_PLAIN
    copy = {}
    for key, item in value.items():
        kind = type(item)
        if type(key) is not str:
            return _NOT_PLAIN
        if kind is float:
            if item - item != 0:
                return _NOT_PLAIN
        elif not (kind is str or kind is int or kind is bool or item is None):
            item = _json_copy(item)
            if item is _NOT_PLAIN:
                return _NOT_PLAIN
        copy[key] = item
    return copy


_PLAIN_FORMS: dict[Any, Callable[[Any], Any]] = {
    str | None: _plain_str,
    int | None: _plain_int,
    list[str] | None: _plain_str_list,
    dict[str, Any] | None: _plain_json_dict,
}
# Per field of RunFields, how to copy a value that is already in plain form (fields of other types,
# e.g. datetimes and GpuAllocation, always go through pydantic).
_PLAIN_FIELDS: dict[str, Callable[[Any], Any]] = {
    name: _PLAIN_FORMS[field.annotation]
    for name, field in RunFields.model_fields.items()
    if field.annotation in _PLAIN_FORMS and field.default is None and not field.metadata
}


def _plain_copy(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The payload copied if every field is a known one holding None or its plain JSON form;
    None if pydantic must look at it. (The hot path of appends: str and int are checked inline.)"""
    if type(payload) is not dict:
        return None
    copy: dict[str, Any] = {}
    plain_fields, str_fields, int_fields = _PLAIN_FIELDS, _STR_FIELDS, _INT_FIELDS
    for key, value in payload.items():
        kind = type(value)
        if kind is str:
            if key not in str_fields:
                return None
        elif kind is int:
            if key not in int_fields:
                return None
        elif value is None:
            if key not in _FIELD_NAMES:
                return None
        else:
            plain = plain_fields.get(key)
            if plain is None:
                return None
            value = plain(value)
            if value is _NOT_PLAIN:
                return None
        copy[key] = value
    return copy


_FIELD_NAMES = frozenset(RunFields.model_fields)
_STR_FIELDS = frozenset(name for name, plain in _PLAIN_FIELDS.items() if plain is _plain_str)
_INT_FIELDS = frozenset(name for name, plain in _PLAIN_FIELDS.items() if plain is _plain_int)


_MERGED = frozenset({"metrics", "params", "resources", "extra"})
_ACCUMULATED = frozenset({"tags", "artifacts"})
_COMBINED = _MERGED | _ACCUMULATED  # fields not simply overwritten by a later event


def fold_run(
    doc: dict[str, Any] | None,
    *,
    seq: int,
    ts: str,
    kind: EventKind,
    run_id: str,
    session_id: str | None,
    payload: dict[str, Any],
    in_place: bool = False,
) -> dict[str, Any]:
    """Apply one run event to the JSON form of a :class:`RunState` (plain dicts: this is the hot
    path of appends). The run's state follows its latest lifecycle event. With ``in_place`` the
    caller owns ``doc`` (a fold's own copy) and it is changed and returned, not copied."""
    run: dict[str, Any]
    if not doc:
        run = {"run_id": run_id, "first_seq": seq, "submitted_at": ts}
    else:
        run = doc if in_place else dict(doc)
    run["state"] = _STATE_TEXT[kind]
    run["last_seq"] = seq
    if session_id and not run.get("session_id"):
        run["session_id"] = session_id
    for key, value in payload.items():
        if value is None:
            continue
        if key not in _COMBINED:
            run[key] = value
        elif key in _MERGED:
            run[key] = {**run.get(key, {}), **value}
        else:
            seen = list(run.get(key, []))
            seen.extend(v for v in value if v not in seen)
            run[key] = seen
    if kind is EventKind.run_started:
        run.setdefault("started_at", ts)
    elif kind is not EventKind.run_submitted:
        run.setdefault("ended_at", ts)
    return run
