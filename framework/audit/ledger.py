"""The audit's view of ledger runs, behind a small interface so checks can be tested with a list."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class LedgerRun(BaseModel):
    """A run as the audit needs it: its id, state and numeric metrics."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    state: str | None = None
    experiment: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def from_any(cls, run: Any) -> LedgerRun:
        """From a ledger ``RunState`` (or anything with ``run_id``, ``state``, ``metrics``)."""
        metrics = {}
        for key, value in (getattr(run, "metrics", None) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[str(key)] = float(value)
        state = getattr(run, "state", None)
        return cls(
            run_id=str(run.run_id),
            state=str(getattr(state, "value", state)) if state is not None else None,
            experiment=getattr(run, "experiment", None),
            metrics=metrics,
        )


class LedgerRejection(BaseModel):
    """A ``request_rejected`` ledger event: a ``remote-run`` request the broker refused."""

    model_config = ConfigDict(extra="ignore")

    seq: int
    ts: float | None = None
    field: str = "request"
    reason: str = ""
    size: int | None = None
    sha256: str | None = None
    request: Any = None
    suppressed: int = 0
    """Refusals before this one that the broker's rate limit left unrecorded (a ``rate-limit``
    event, written when the broker stops, carries only this count)."""

    @classmethod
    def from_event(cls, event: Any) -> LedgerRejection:
        """From a ledger ``LedgerEvent`` of kind ``request_rejected`` (fields it lacks stay empty)."""
        payload = getattr(event, "payload", None) or {}
        ts = getattr(event, "ts", None)
        size = payload.get("bytes")
        suppressed = payload.get("suppressed")
        return cls(
            seq=int(event.seq),
            ts=ts.timestamp() if isinstance(ts, datetime) else None,
            field=str(payload.get("field") or "request"),
            reason=str(payload.get("reason") or ""),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            sha256=str(payload["sha256"]) if payload.get("sha256") else None,
            request=payload.get("request"),
            suppressed=suppressed if type(suppressed) is int and suppressed > 0 else 0,
        )


class LedgerDivergence(BaseModel):
    """An ``evaluation_diverged`` ledger event: the workspace's protected paths differed from the
    session's pristine copy (at a submit, or at session end)."""

    model_config = ConfigDict(extra="ignore")

    seq: int
    when: str = "?"
    evaluation_sha256: str | None = None
    current_sha256: str | None = None
    changes: list[dict[str, str]] = Field(default_factory=list)
    changes_total: int = 0

    @classmethod
    def from_event(cls, event: Any) -> LedgerDivergence:
        payload = getattr(event, "payload", None) or {}
        changes = payload.get("changes")
        total = payload.get("changes_total")
        return cls(
            seq=int(event.seq),
            when=str(payload.get("when") or "?"),
            evaluation_sha256=str(payload.get("evaluation_sha256") or "") or None,
            current_sha256=str(payload.get("current_sha256") or "") or None,
            changes=[
                {"path": str(c.get("path")), "change": str(c.get("change"))}
                for c in (changes if isinstance(changes, list) else [])
                if isinstance(c, dict)
            ],
            changes_total=total if type(total) is int else 0,
        )


class LedgerGitPlant(BaseModel):
    """A ``git_indirection_planted`` ledger event: at session end the repository held things the
    user's own git would follow to another config or a program."""

    model_config = ConfigDict(extra="ignore")

    seq: int
    entries: list[dict[str, str]] = Field(default_factory=list)
    total: int = 0

    @classmethod
    def from_event(cls, event: Any) -> LedgerGitPlant:
        payload = getattr(event, "payload", None) or {}
        entries = payload.get("entries")
        total = payload.get("total")
        return cls(
            seq=int(event.seq),
            entries=[
                {"path": str(e.get("path")), "why": str(e.get("why"))}
                for e in (entries if isinstance(entries, list) else [])
                if isinstance(e, dict)
            ],
            total=total if type(total) is int else 0,
        )


@runtime_checkable
class GitPlantSource(Protocol):
    def git_planted(self, session_id: str) -> list[LedgerGitPlant]:
        """The session's ``git_indirection_planted`` events, in ledger order."""
        ...


@runtime_checkable
class DivergenceSource(Protocol):
    def diverged(self, session_id: str) -> list[LedgerDivergence]:
        """The session's ``evaluation_diverged`` events, in ledger order."""
        ...


class RunSource(Protocol):
    def runs(self, session_id: str | None) -> Sequence[LedgerRun]: ...


@runtime_checkable
class RejectionSource(Protocol):
    def rejected(self, session_id: str) -> Iterator[LedgerRejection]:
        """The session's refused requests in ledger order, read lazily (close the iterator when
        done with it)."""
        ...


REJECTED_PAGE = 500
"""``request_rejected`` events read per ledger query: a session may have sent thousands."""


class LedgerRuns:
    """Runs of one session from the project ledger (``framework.ledger``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def runs(self, session_id: str | None) -> Sequence[LedgerRun]:
        from framework.ledger import open_ledger

        with open_ledger(self.url) as ledger:
            found = ledger.runs(session_id=session_id) if session_id else ledger.runs()
            return [LedgerRun.from_any(r) for r in found]

    def diverged(self, session_id: str) -> list[LedgerDivergence]:
        """``evaluation_diverged`` events of this session (one per distinct diverged state, so
        few: read at once)."""
        from framework.ledger import EventKind, open_ledger

        with open_ledger(self.url) as ledger:
            events = ledger.events(session_id=session_id, kind=EventKind.evaluation_diverged)
            return [LedgerDivergence.from_event(e) for e in events]

    def git_planted(self, session_id: str) -> list[LedgerGitPlant]:
        """``git_indirection_planted`` events of this session (at most one per session end)."""
        from framework.ledger import EventKind, open_ledger

        with open_ledger(self.url) as ledger:
            events = ledger.events(session_id=session_id, kind=EventKind.git_indirection_planted)
            return [LedgerGitPlant.from_event(e) for e in events]

    def rejected(self, session_id: str) -> Iterator[LedgerRejection]:
        """``request_rejected`` events of this session only, a page at a time (the ledger's
        ``(session_id, seq)`` index), so a caller that stops early reads no further."""
        from framework.ledger import EventKind, open_ledger

        with open_ledger(self.url) as ledger:
            after = 0
            while True:
                page = ledger.events(
                    session_id=session_id,
                    kind=EventKind.request_rejected,
                    after_seq=after,
                    limit=REJECTED_PAGE,
                )
                for event in page:
                    yield LedgerRejection.from_event(event)
                if len(page) < REJECTED_PAGE:
                    return
                after = page[-1].seq
