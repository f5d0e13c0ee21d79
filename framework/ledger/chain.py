"""The fast walk of the hash chain, used by ``Ledger.verify``; standard library only.

Also a script: ``python chain.py URI FIRST LAST PREV`` walks seqs FIRST..LAST of an SQLite ledger
(``URI``: ``file:/path?mode=ro``) starting from the hash PREV and prints ``SEQ HASH`` of the last event, or ``broken``.
``verify`` runs it on the second half of a large ledger while it walks the first half itself, so a
second core shares the hashing. It imports nothing from the package so that it starts in
milliseconds (``python -I -S``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from collections.abc import Callable, Iterator
from typing import Any

_MARKER = b',"prev_hash":"'
_SKIP = len(_MARKER)


def walk(batches: Iterator[list[Any]], expected_seq: int, prev_hash: str) -> tuple[int, str] | None:
    """Check rows ``(seq, body, hash)`` in seq order: seqs run on from ``expected_seq``, each body
    hashes to its hash and names the hash before it. Returns (last seq, last hash) as of the rows
    seen (``(expected_seq - 1, prev_hash)`` for none), or None at the first row that fails.

    ``prev_hash`` is read at its canonical place, after the last ``,"prev_hash":"`` of the body:
    every field after it (ids, seq, ts) is free of quotes, so in a body the ledger wrote, nothing in
    the payload can be mistaken for it. A body crafted otherwise would need a hash that the next
    event names, i.e. the whole rest of the chain rewritten, which no check can catch."""
    sha256 = hashlib.sha256
    rfind: Callable[..., int] = bytes.rfind
    startswith: Callable[..., bool] = bytes.startswith
    expected, prev, digest = expected_seq, prev_hash.encode(), prev_hash
    try:
        for rows in batches:
            for seq, body, digest in rows:
                if (
                    seq != expected
                    or not startswith(body, prev, rfind(body, _MARKER) + _SKIP)
                    or sha256(body).hexdigest() != digest
                ):
                    return None
                expected, prev = seq + 1, digest.encode()
    except (AttributeError, TypeError):
        return None  # a value of the wrong type (text body, numeric hash): not what we wrote
    return expected - 1, digest


def batches_of(cursor: Any, size: int = 20_000) -> Iterator[list[Any]]:
    while rows := cursor.fetchmany(size):
        yield rows


def _main(argv: list[str]) -> int:
    uri, first, last, prev = argv[1], int(argv[2]), int(argv[3]), argv[4]
    conn = sqlite3.connect(uri, uri=True, timeout=60)
    try:
        cursor = conn.execute(
            "SELECT seq, body, hash FROM ledger_events WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (first, last),
        )
        end = walk(batches_of(cursor), first, prev)
    finally:
        conn.close()
    print("broken" if end is None or end[0] != last else f"{end[0]} {end[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
