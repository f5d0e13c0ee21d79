"""The results ledger: an append-only, hash-chained record of runs, sessions and audits.

Public API (import from ``framework.ledger``)::

    ledger = open_ledger(url)        # "sqlite:///abs/path.sqlite[?sync=normal|full]" or "postgresql://..."
    ledger.append(kind, *, run_id=None, session_id=None, payload={}) -> LedgerEvent   # durable on return
    ledger.append_many([NewEvent(kind, run_id, session_id, payload), ...]) -> list[LedgerEvent]
                                     # threads appending at once share commits (group commit)
    ledger.events(run_id=None, session_id=None, kind=None, after_seq=0, limit=None) -> list[LedgerEvent]
    ledger.runs(experiment=None, tag=None, state=None, session_id=None,
                since=None, until=None, limit=None) -> list[RunState]
    ledger.run(run_id) -> RunState   # LedgerError if unknown
    ledger.head() -> (seq, hash)
    ledger.verify() -> VerifyReport
    ledger.close()                   # or use it as a context manager

Run events (``run_submitted``, ``run_started``, ``run_finished``, ``run_failed``,
``run_cancelled``) carry :class:`RunFields` payloads; the ledger folds them into the
:class:`RunState` view in the same transaction. A run id is submitted once. Every mistake raises
:class:`LedgerError` with a message that names the input. Only host-side code (the broker, the
launcher, the audit) writes; the ledger file lives in the state dir, outside the sandbox.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framework.ledger.models import (
        EventKind,
        GpuAllocation,
        LedgerError,
        LedgerEvent,
        RunFields,
        RunSpec,
        RunState,
        RunStatus,
        VerifyProblem,
        VerifyReport,
    )
    from framework.ledger.store import Ledger, NewEvent, open_ledger

_STORE_NAMES = frozenset({"Ledger", "NewEvent", "open_ledger"})


def __getattr__(name: str) -> Any:
    """Import lazily, so that registering the ``ledger`` commands does not load the store."""
    if name not in __all__:
        raise AttributeError(f"module 'framework.ledger' has no attribute {name!r}")
    from importlib import import_module

    module = import_module(
        "framework.ledger.store" if name in _STORE_NAMES else "framework.ledger.models"
    )
    return getattr(module, name)


__all__ = [
    "EventKind",
    "GpuAllocation",
    "Ledger",
    "LedgerError",
    "LedgerEvent",
    "NewEvent",
    "RunFields",
    "RunSpec",
    "RunState",
    "RunStatus",
    "VerifyProblem",
    "VerifyReport",
    "open_ledger",
]
