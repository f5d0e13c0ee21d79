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
from collections.abc import Callable, Iterable
from typing import Any

_MARKER = b',"prev_hash":"'
_SKIP = len(_MARKER)


def walk(rows: Iterable[Any], prev_hash: str) -> tuple[int, str] | None:
    """Check rows ``(body, hash)`` in seq order: each body hashes to its hash and names the hash
    before it (the first names ``prev_hash``). Returns (rows seen, last hash), or None at the
    first row that fails. The rows' seqs are not read here (one column less costs a third of the
    walk): the caller proves they run without a gap from the count of rows this returns: seqs
    are unique integers, so a range of n seqs that holds n rows holds each seq once.

    ``prev_hash`` is read at its canonical place, after the last ``,"prev_hash":"`` of the body:
    every field after it (ids, seq, ts) is free of quotes, so in a body the ledger wrote, nothing in
    the payload can be mistaken for it. A body crafted otherwise would need a hash that the next
    event names, i.e. the whole rest of the chain rewritten, which no check can catch."""
    sha256 = hashlib.sha256
    rfind: Callable[..., int] = bytes.rfind
    startswith: Callable[..., bool] = bytes.startswith
    prev, digest, count = prev_hash.encode(), prev_hash, 0
    try:
        for count, (body, digest) in enumerate(rows, 1):  # noqa: B007 - count is the result
            if (
                not startswith(body, prev, rfind(body, _MARKER) + _SKIP)
                or sha256(body).hexdigest() != digest
            ):
                return None
            prev = digest.encode()
    except (AttributeError, TypeError, ValueError):
        return None  # a value of the wrong type (text body, numeric hash): not what we wrote
    return count, digest


RANGE_SQL = "SELECT body, hash FROM ledger_events WHERE seq BETWEEN ? AND ? ORDER BY seq"


def _main(argv: list[str]) -> int:
    uri, first, last, prev = argv[1], int(argv[2]), int(argv[3]), argv[4]
    conn = sqlite3.connect(uri, uri=True, timeout=60)
    try:
        end = walk(conn.execute(RANGE_SQL, (first, last)), prev)
    finally:
        conn.close()
    # Seqs are unique integers: as many rows as seqs in first..last means each is there once.
    print("broken" if end is None or end[0] != last - first + 1 else f"{last} {end[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
