"""The audit's view of ledger runs, behind a small interface so checks can be tested with a list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

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


class RunSource(Protocol):
    def runs(self, session_id: str | None) -> Sequence[LedgerRun]: ...


class LedgerRuns:
    """Runs of one session from the project ledger (``framework.ledger``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def runs(self, session_id: str | None) -> Sequence[LedgerRun]:
        from framework.ledger import open_ledger

        with open_ledger(self.url) as ledger:
            found = ledger.runs(session_id=session_id) if session_id else ledger.runs()
            return [LedgerRun.from_any(r) for r in found]
