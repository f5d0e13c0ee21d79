"""The ledger's anchor: an append-only file outside the database that records the chain head.

After every append (one record per write, however many events it held) the head it reached is
appended as one fixed-width line ``SEQ HASH`` (seq as 20 digits), with one ``write()`` on a file
opened ``O_APPEND``, by the process that holds the ledger's write lock, so the records follow the
chain's order. Each hash covers every event before it, so an intact chain that still has the
anchored seq with the anchored hash still holds every anchored event unchanged: ``verify`` checks
the first and the last record (see docs/ledger.md for what that does and does not prove).

The record is written after the events are acknowledged, and not fsynced of its own: the anchor
is never ahead of events the ledger has made durable (at ``sync=full`` the tail is fsynced
first), and a crash can only leave it behind, which is no failure. A failed write is not an
append failure either: the events are already in; the next record covers them too.

Reading tolerates what a crash can leave: bytes after the last newline (a write cut short) are
not a record yet, and a line that ends in a record but starts with other bytes is that record
after the remains of an earlier cut-short write (records are fixed-width).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from framework.ledger.models import LedgerError

RECORD_SIZE = 20 + 1 + 64  # without its newline
_RECORD = re.compile(rb"(\d{20}) ([0-9a-f]{64})")
_READ_BACK = 64 * 1024  # how much of each end of the file is read to find its records


def anchor_path(url: str, state_dir: Path | None) -> Path | None:
    """Where the anchor of the ledger at ``url`` lives: beside an SQLite database (which is in the
    state dir unless ``ledger.url`` moves it), and in the state dir for PostgreSQL, one per
    database (None without a state dir: that ledger is not anchored)."""
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from framework.ledger.sqlite import sqlite_path

        database = sqlite_path(url)
        return database.with_name(database.name + "-anchor")
    if state_dir is None:
        return None
    # The URL's password must not end up in a file name; the host and database name suffice.
    where = url.partition("://")[2].rpartition("@")[2].partition("?")[0]
    return state_dir / f"ledger-postgres-{hashlib.sha256(where.encode()).hexdigest()[:16]}.anchor"


def parse_head(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` (what ``ledger head`` prints) -> (seq, hash); LedgerError if it is not one."""
    seq, sep, digest = text.strip().partition(":")
    if not (sep and seq.isdigit() and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise LedgerError(
            f"head {text!r} is not SEQ:HASH (a number, a colon and 64 hex digits, as "
            "`agentic-researcher ledger head` prints it)"
        )
    return int(seq), digest


def record(seq: int, digest: str) -> bytes:
    return b"%020d %s\n" % (seq, digest.encode())


class AnchorState(NamedTuple):
    """What an anchor file says: its first and last records (None: none yet), and what is wrong
    with its last line if that is not a record."""

    path: Path
    first: tuple[int, str] | None
    last: tuple[int, str] | None
    damaged: str | None


class Anchor:
    """An anchor file, opened for appending on the first write (a ledger opened only to be read
    needs no write access to it). Not thread-safe: written under the ledger's locks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _opened(self) -> int | None:
        if self._fd is None:
            with contextlib.suppress(OSError):  # read-only state dir: nothing to anchor from here
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                self._fd = os.open(self.path, flags, 0o644)
        return self._fd

    def write(self, seq: int, digest: str) -> None:
        """Append the head (seq, digest); see the module docstring for why a failure is ignored."""
        fd = self._opened()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, record(seq, digest))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialize this host's appenders from before their commit to after their record (for
        PostgreSQL, whose write lock is a row on the server, released by the commit itself)."""
        fd = self._opened()
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read(path: Path) -> AnchorState:
    """The first and last records of the anchor file at ``path`` (reads its two ends only)."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            head = file.read(min(size, _READ_BACK))
            file.seek(max(0, size - _READ_BACK))
            tail = file.read()
    except FileNotFoundError:
        return AnchorState(path, None, None, None)
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger's anchor file {path}: {exc.strerror}") from None
    first_lines = head.split(b"\n")[:-1]  # the piece after the last newline is unfinished
    last_lines = tail.split(b"\n")[:-1]
    if size > _READ_BACK:
        last_lines = last_lines[1:]  # the read-back may start mid-line
    first = next(filter(None, map(_parse, first_lines)), None)
    last = next(filter(None, map(_parse, reversed(last_lines))), None)
    damaged = None
    if last_lines and _parse(last_lines[-1]) is None:
        damaged = (
            f"the last line of the anchor file {path} is not a (seq, hash) record "
            "(the file was edited, or damaged by a crash)"
        )
    return AnchorState(path, first, last, damaged)


def _parse(line: bytes) -> tuple[int, str] | None:
    found = _RECORD.fullmatch(line[-RECORD_SIZE:])
    return (int(found[1]), found[2].decode()) if found else None
