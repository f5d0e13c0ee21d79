"""The background folder of an SQLite ledger: ``python -m framework.ledger.folder URL``.

Started by a ledger whose tail file has grown past ``FOLD_AT_BYTES`` (see
``framework/ledger/sqlite.py``), so that its appenders need not wait while SQLite takes the events.
Each line on standard input asks for a fold: rounds that hold the tail's lock only to read the
tail, then a locked fold of what arrived meanwhile, which empties the tail. It exits when its
input closes (the ledger was closed, or its process died) or after :data:`IDLE_EXIT_S` seconds
without a request, folding what is left first. A failed fold leaves its events in the tail: the
next fold, or the next reader, takes them or says why it cannot.
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import sys

from framework.ledger.models import LedgerError
from framework.ledger.sqlite import SqliteLedger

IDLE_EXIT_S = 5.0


def serve(url: str, requests: int = 0, idle_exit_s: float = IDLE_EXIT_S) -> None:
    ledger = SqliteLedger.open(url)
    ledger.background_fold = False
    try:
        while True:
            ready, _, _ = select.select([requests], [], [], idle_exit_s)
            data = os.read(requests, 4096) if ready else b""
            with contextlib.suppress(LedgerError, OSError, sqlite3.Error):
                ledger._fold_behind()
            if not data:  # input closed, or idle: done
                return
    finally:
        ledger.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m framework.ledger.folder LEDGER_URL", file=sys.stderr)
        return 2
    try:
        serve(argv[0])
    except LedgerError as exc:
        print(f"ledger folder: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
