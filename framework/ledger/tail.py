"""The tail file of an SQLite ledger: acknowledged events not yet folded into its tables.

An append writes its events' bodies to this file with one ``write()`` under an exclusive
``flock`` and returns; a commit of SQLite costs several times more than the whole append, so the
tables take the events later, many per transaction (see ``SqliteLedger._fold``). The format:

    ledger-tail after 00000000000000001234 <hash of event 1234>\\n\\n     header: where it continues
    <body of event 1235>\\n<body of event 1236>\\n\\n                    one append (any number of events)
    <body of event 1237>\\n\\n                                          the next append
    ...

Bodies are the canonical JSON that is hashed (no raw newline can occur in one), so each line is one
event and an empty line closes each append. Only bytes up to the last ``\\n\\n`` count: an append
cut short by a killed writer (it was never acknowledged) leaves bytes after it, which the next
holder of the lock cuts off, so a batch is in the file whole or not at all. The header names the
head the tail continues from, so its first event is checked against the database's head.

Beside it, ``<tail>.version`` holds a 64-bit counter that every process maps into memory. Each
change to the tail is counted there under the lock before it is made; an appender whose last
read or write is still the current version knows the file without reading it (no system call).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from framework.ledger.models import RUN_EVENT_KINDS, LedgerError
from framework.ledger.store import ENVELOPE, KINDS, Entry

_HEADER_PREFIX = b"ledger-tail after "
HEADER_SIZE = len(_HEADER_PREFIX) + 20 + 1 + 64 + 2
_END = b"\n\n"


class Stored(msgspec.Struct, gc=False):
    """An event body as the fold reads it back from the tail's bytes."""

    ts: str
    kind: str
    run_id: str | None
    session_id: str | None
    payload: dict[str, Any]


STORED = msgspec.json.Decoder(Stored)


_VERSION_SIZE = 8
_VERSION_MASK = (1 << 64) - 1


def version_path(path: Path) -> Path:
    """The version file beside the tail: ``ledger.sqlite-tail`` -> ``ledger.sqlite-tail.version``.
    It holds one 64-bit counter, mapped into every process that has the ledger open."""
    return path.with_name(path.name + ".version")


def header(seq: int, digest: str) -> bytes:
    return b"%s%020d %s\n\n" % (_HEADER_PREFIX, seq, digest.encode())


def parse_header(data: bytes) -> tuple[int, str] | None:
    if len(data) < HEADER_SIZE or not data.startswith(_HEADER_PREFIX) or data[-2:] != _END:
        return None
    seq, _, digest = data[len(_HEADER_PREFIX) : -2].partition(b" ")
    if not seq.isdigit() or len(digest) != 64:
        return None
    return int(seq), digest.decode()


class Tail:
    """One open tail file. Not thread-safe: the ledger calls it under its own lock. Every method
    but :meth:`may_hold_events` must be called inside :meth:`locked`."""

    def __init__(self, path: Path, *, fsync: bool, run_ids: set[str] | None = None) -> None:
        self.path = path
        self.fsync = fsync
        self.run_ids: set[str] = set() if run_ids is None else run_ids
        """Runs known to have events: every run of an event this tail has read or written is added
        (and never removed: the events stay in the ledger when the tail is folded)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags | os.O_APPEND, 0o666)
        except OSError as exc:
            raise LedgerError(f"cannot open the ledger's tail file {path}: {exc}") from None
        self._version_fd = -1
        try:
            self._version_fd = os.open(version_path(path), flags, 0o666)
            if os.fstat(self._version_fd).st_size < _VERSION_SIZE:
                os.ftruncate(self._version_fd, _VERSION_SIZE)  # only ever grows: never SIGBUS
            self._version_map = mmap.mmap(self._version_fd, _VERSION_SIZE)
        except OSError as exc:
            if self._version_fd >= 0:
                os.close(self._version_fd)
            os.close(self._fd)
            raise LedgerError(
                f"cannot open the ledger's tail version file {version_path(path)}: {exc}"
            ) from None
        self._versions = memoryview(self._version_map).cast("Q")
        self._seen_version = -1  # the version of the file this process's view is of
        self._forget()

    def _forget(self) -> None:
        """Drop what this process knows of the file; the next :meth:`sync` reads it again."""
        self._header: bytes | None = None  # as read from the file; None: the file is empty
        self._end = 0  # bytes of whole appends seen so far
        self.head: tuple[int, str] = (0, "")  # (seq, hash) of the last event in the ledger
        self.after: tuple[int, str] = (0, "")  # the head the tail continues from
        # The events in the tail, in order (seq ``after[0] + 1 + i``): their bodies and hashes
        # only, which the garbage collector does not track (the fold decodes each body again).
        self.bodies: list[bytes] = []
        self.digests: list[str] = []

    def close(self) -> None:
        self._versions.release()
        self._version_map.close()
        os.close(self._version_fd)
        os.close(self._fd)

    def _changing(self) -> int:
        """Count a change of the file about to be made (under the lock) and return the new
        version. Counted before it is made, so a writer that dies half-way leaves a version no
        process has seen."""
        version = (self._versions[0] + 1) & _VERSION_MASK
        self._versions[0] = version
        return version

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The ledger's write lock, shared with every process that opens the same ledger (it is
        released by the kernel if the holder dies)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def lock(self) -> None:
        """Take the lock of :meth:`locked` (the append path: a context manager costs more than
        the two system calls); release it with :meth:`unlock`."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def may_hold_events(self) -> bool:
        """False only if the tail holds no event (safe without the lock: see docs/ledger.md)."""
        return os.fstat(self._fd).st_size > HEADER_SIZE

    def sync(
        self, database_head: Callable[[], tuple[int, str]], *, trust_version: bool = False
    ) -> None:
        """Bring :attr:`head`, :attr:`run_ids` and :attr:`entries` up to date with the file,
        reading only what other processes appended since this one last looked. Cuts off the
        remains of an append whose writer died. ``database_head`` is asked when the tail is empty.

        With ``trust_version`` (the append path), nothing is read when the version file says that
        no process has changed the tail since this one last read or wrote it: every change is
        counted there, under the lock, before it is made. Folds read the file regardless, so that
        they also see edits made without the ledger."""
        if trust_version and self._header is not None and self._versions[0] == self._seen_version:
            return
        self._sync_file(database_head)
        self._seen_version = self._versions[0]

    def _sync_file(self, database_head: Callable[[], tuple[int, str]]) -> None:
        size = os.fstat(self._fd).st_size
        if (
            self._header is None
            or size < self._end
            or os.pread(self._fd, HEADER_SIZE, 0) != self._header
        ):
            self._forget()  # empty, or folded (and maybe refilled) by another process
            if size == 0:
                self.head = self.after = database_head()
                return
            first = os.pread(self._fd, HEADER_SIZE, 0)
            after = parse_header(first)
            if after is None:
                if size < HEADER_SIZE:  # the first append's writer died while writing the header
                    self._changing()
                    os.ftruncate(self._fd, 0)
                    self.head = self.after = database_head()
                    return
                raise LedgerError(
                    f"the ledger's tail file {self.path} does not start with its header "
                    "(it was edited); the events in it cannot be trusted"
                )
            self._header, self._end = first, HEADER_SIZE
            self.head = self.after = after
        if size > self._end:
            new = os.pread(self._fd, size - self._end, self._end)
            whole = new.rfind(_END) + len(_END) if _END in new else 0
            if whole < len(new):
                self._changing()
                os.ftruncate(self._fd, self._end + whole)  # an append whose writer died mid-write
            self._take(new[:whole])
            self._end += whole
        if not self.digests:  # a header alone (its events were cut off): start afresh
            self._changing()
            os.ftruncate(self._fd, 0)
            self._forget()
            self.head = self.after = database_head()

    def _take(self, appended: bytes) -> None:
        """Follow the chain through events other processes appended."""
        seq, digest = self.head
        for line in appended.split(b"\n"):
            if not line:
                continue
            try:
                event = ENVELOPE.decode(line)
                kind = KINDS[event.kind]
            except (msgspec.DecodeError, KeyError):
                event = None
            if event is None or event.seq != seq + 1 or event.prev_hash != digest:
                raise LedgerError(
                    f"the ledger's tail file {self.path} is damaged after seq {seq} (an event "
                    "there was edited, removed or reordered); run `agentic-researcher ledger verify`"
                )
            seq, digest = event.seq, hashlib.sha256(line).hexdigest()
            if event.run_id is not None and kind in RUN_EVENT_KINDS:
                self.run_ids.add(event.run_id)
            self.bodies.append(line)
            self.digests.append(digest)
        self.head = (seq, digest)

    def append(self, appends: list[list[Entry]], run_ids: set[str]) -> None:
        """Write whole appends in one ``write()``, which must succeed whole; then fsync it if
        this ledger asks for that."""
        if len(appends) == 1 and len(appends[0]) == 1:  # one event: the common case
            data = appends[0][0].body + _END
        else:
            data = b"".join([b"\n".join([e.body for e in entries]) + _END for entries in appends])
        if self._header is None:
            self._header = header(*self.head)
            data = self._header + data
        version = self._changing()
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"wrote {written} of {len(data)} bytes")
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            os.ftruncate(self._fd, self._end)
            if self._end == 0:
                self._header = None
            raise LedgerError(
                f"cannot write to the ledger's tail file {self.path}: {exc}; nothing was appended"
            ) from None
        self._end += len(data)
        if self._seen_version == version - 1:  # what this process saw, plus what it wrote
            self._seen_version = version
        bodies, digests = self.bodies, self.digests
        for entries in appends:
            for entry in entries:
                bodies.append(entry.body)
                digests.append(entry.digest)
        last = appends[-1][-1]
        self.head = (last.seq, last.digest)
        if run_ids:
            self.run_ids |= run_ids

    @property
    def size(self) -> int:
        return self._end

    def clear(self) -> None:
        """Empty the file once its events are in the tables (and synced to disk)."""
        self._changing()
        os.ftruncate(self._fd, 0)
        self._forget()
