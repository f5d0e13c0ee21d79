"""Reading one large transcript with the machine's other cores.

Decoding lines and building events is most of an audit's time, and a JSONL line can be read
without the lines before it, except for a little state a reader carries from line to line (the
Codex model in force, its cumulative token totals). So a large file is cut into segments of
whole lines; worker processes read them (:meth:`RangeReader.read_range`), leaving that state
open, and send their events back; this process settles them in file order
(:meth:`Settler.settle_range`), numbers their lines, adds up what the workers counted, and hands
them on to the checks, which see exactly the events, in exactly the order, of reading the file in
one go. At most a few segments are in flight, so memory stays bounded whatever the file size.
A worker that dies (killed for memory, say) fails the audit instead of hanging it.

A compressed file (``.jsonl.zst``) cannot be cut at byte offsets: this process decompresses it and
writes its segments, whole lines, to spool files in memory (``/dev/shm``), which the workers read;
the events' file name is set back to the compressed file's.

Small files and formats without :meth:`RangeReader.read_range` are read in this process, as is
everything where starting workers is not possible (one core, no ``fork``).
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec

from framework.audit.events import Event
from framework.audit.readers import READERS
from framework.audit.readers.base import CHUNK_BYTES, ReadState, line_start, open_binary

SEGMENT_BYTES = 8 << 20
"""Bytes of the file per segment: enough for the per-segment costs (a task, a message) not to
matter, small enough for a few in flight to stay a few megabytes of events."""
MIN_BYTES = 64 << 20
"""Smaller files are read in this process: starting workers would cost more than it saves."""
UNKNOWN_RATIO = 4
"""A ``.zst`` file whose header does not give its decompressed size (a streaming writer's) is taken
to hold this many times its own size: fewer than JSON text compresses to, so that a file read by
workers is large enough to gain from them."""
SPOOL = "segment.jsonl"
"""The name of a spooled segment (see :func:`_spooled`), replaced by the file's own in what the
workers send back."""
MAX_WORKERS = 4
"""Checking the events, in this process, takes about a third of the time reading them takes, so
more workers would wait for it."""
IN_FLIGHT = 2
"""Segments per worker read ahead of this process: enough to keep the workers busy, while the
memory they hold stays a few segments' events."""

KEPT_BYTES = 32 << 20
"""Freed memory a worker's allocator may keep (see :func:`_keep_freed_memory`); 32 MB is the
largest ``mmap`` threshold glibc accepts on 64-bit machines."""
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameters (``malloc.h``)."""


class Settler(Protocol):
    def settle_range(self, events: list[Event], carry: Any) -> Iterator[Event]:
        """The events of the next segment, as reading the file in one go yields them."""
        ...


@runtime_checkable
class RangeReader(Protocol):
    """A reader whose files can be read a segment at a time, in separate processes."""

    name: str
    carry_type: type

    def events(self, path: Path, state: ReadState) -> Iterator[Event]: ...

    def read_range(
        self, path: Path, state: ReadState, start: int, end: int | None
    ) -> tuple[list[Event], Any]:
        """The events of the lines from ``start`` to ``end`` (line starts; None: to the end of
        the file), and what settling them needs to know (a ``carry_type``)."""
        ...

    def settler(self) -> Settler:
        """Settles the segments of one file, given in file order."""
        ...

    def companions(self, path: Path, state: ReadState) -> Iterator[Event]:
        """The events of the files read after this one as part of it (Claude Code subagents)."""
        ...


class Segment(msgspec.Struct, gc=False):
    """What a worker sends back: the events of its lines, counted from line 1, and its counts."""

    events: list[Event]
    carry: msgspec.Raw
    state: ReadState


_encoder = msgspec.msgpack.Encoder()
_segment = msgspec.msgpack.Decoder(Segment)


def read_events(
    path: Path,
    fmt: str,
    state: ReadState,
    *,
    workers: int | None = None,
    min_bytes: int | None = None,
    segment_bytes: int | None = None,
) -> Iterator[Event]:
    """``READERS[fmt].events(path, state)``, read by ``workers`` processes (default: one per core,
    at most :data:`MAX_WORKERS`) when the file has ``min_bytes`` (default :data:`MIN_BYTES`;
    decompressed, for a ``.zst`` file)."""
    reader = READERS[fmt]
    if workers is None:
        workers = min(_cores(), MAX_WORKERS)
    compressed = path.suffix == ".zst"
    if (
        workers < 2
        or not isinstance(reader, RangeReader)
        or not path.is_file()
        or _size(path, compressed) < (MIN_BYTES if min_bytes is None else min_bytes)
        or not _forkable()
    ):
        return reader.events(path, state)
    return _segmented(reader, path, state, workers, segment_bytes or SEGMENT_BYTES, compressed)


def _segmented(
    reader: RangeReader,
    path: Path,
    state: ReadState,
    workers: int,
    segment_bytes: int,
    compressed: bool = False,
) -> Iterator[Event]:
    # here: a small file's audit need not import them
    import shutil
    import tempfile

    spool = None
    segments: Iterator[tuple[Path, int, int | None]]
    if compressed:
        shm = Path("/dev/shm")
        where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        spool = Path(tempfile.mkdtemp(prefix="ar-audit-", dir=where))
        segments = _spooled(path, spool, segment_bytes, IN_FLIGHT * workers + 1)
    else:
        size = path.stat().st_size
        segments = (
            (path, start, start + segment_bytes if start + segment_bytes < size else None)
            for start in range(0, size, segment_bytes)
        )
    try:
        yield from _gathered(reader, path, state, workers, segments, spool is not None)
    finally:
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)


def _gathered(
    reader: RangeReader,
    path: Path,
    state: ReadState,
    workers: int,
    segments: Iterator[tuple[Path, int, int | None]],
    spooled: bool,
) -> Iterator[Event]:
    """The events of ``segments`` (file, start, end), read by ``workers`` forked processes and
    settled in order: those of ``path``, whose file name they carry."""
    from framework.audit.workers import run_in_workers  # here: a small file's audit need not

    carry: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(reader.carry_type)
    settler = reader.settler()
    state.files.append(str(path))
    lines = 0
    name = path.name
    tasks = ((str(file), start, end) for file, start, end in segments)
    work = functools.partial(_read, reader.name)
    answers = run_in_workers(work, tasks, workers, IN_FLIGHT, _start_worker)
    try:
        for answer in answers:
            part = _segment.decode(answer)
            if spooled:
                for event in part.events:
                    event.line += lines
                    event.source = name
                _rename(part.state, name)
            else:
                for event in part.events:
                    event.line += lines
            state.merge(part.state, lines)
            lines += part.state.lines
            yield from settler.settle_range(part.events, carry.decode(part.carry))
    finally:
        answers.close()  # stopped early: the workers are stopped now, not when collected
    yield from reader.companions(path, state)


def _start_worker() -> None:
    """A worker's set-up: its collections skip what it was forked with, and freed memory stays
    with it (:func:`_keep_freed_memory`)."""
    gc.freeze()
    _keep_freed_memory()


def _keep_freed_memory() -> None:
    """Let glibc's allocator keep what a worker frees for its next segment, instead of giving it
    back to the kernel and faulting it in again as fresh pages. By default glibc serves blocks of
    128 KB or more (chunks read, encoded segments) with their own ``mmap``, and trims the heap
    once 128 KB at its top are free (the segments' events, freed together): a worker then took
    about 60,000 page faults per GB read, and a sixth of its CPU time was the kernel's. Both
    thresholds are raised to :data:`KEPT_BYTES`, which only bounds what a worker may hold on to;
    a process that is no worker (the caller's) keeps glibc's defaults. Elsewhere (another C
    library) this does nothing."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt(M_MMAP_THRESHOLD, KEPT_BYTES)
    mallopt(M_TRIM_THRESHOLD, KEPT_BYTES)


def _read(fmt: str, path: str | Path, start: int, end: int | None) -> bytes:
    """In a worker: the segment of the lines starting from ``start`` up to ``end`` (any offsets:
    each segment begins at the first line that starts in it)."""
    reader = READERS[fmt]
    assert isinstance(reader, RangeReader)
    state = ReadState(format=fmt)
    path = Path(path)
    first = line_start(path, start)
    stop = line_start(path, end) if end is not None else None
    events, carry = reader.read_range(path, state, first, stop)
    return _encoder.encode(
        Segment(events=events, carry=msgspec.Raw(_encoder.encode(carry)), state=state)
    )


def _size(path: Path, compressed: bool) -> int:
    """The file's size; decompressed for a ``.zst`` file: as its frame header gives it, else
    :data:`UNKNOWN_RATIO` times its size."""
    size = path.stat().st_size
    if not compressed:
        return size
    import zstandard

    with path.open("rb") as fh:
        header = fh.read(18)  # the longest frame header
    try:
        content = zstandard.frame_content_size(header)
    except zstandard.ZstdError:  # not a zstd frame: reading it will say so
        content = -1
    return content if content >= 0 else size * UNKNOWN_RATIO


def _spooled(
    path: Path, spool: Path, segment_bytes: int, ring: int
) -> Iterator[tuple[Path, int, None]]:
    """The decompressed lines of ``path``, about ``segment_bytes`` of whole lines at a time, each
    written to a file under ``spool`` as the workers ask for them. ``ring`` files are reused in
    turn (the caller has at most ``ring - 1`` segments in flight): rewriting a file in place
    reuses its pages, where a new file would fault in fresh ones."""
    files = []
    for n in range(ring):
        (spool / str(n)).mkdir()
        files.append(spool / str(n) / SPOOL)
    turn = sent = 0
    fd = os.open(files[turn], os.O_WRONLY | os.O_CREAT, 0o600)
    written = 0
    try:
        with open_binary(path) as fh:
            while chunk := fh.read(CHUNK_BYTES):
                data = memoryview(chunk)
                if written + len(data) >= segment_bytes:
                    cut = chunk.rfind(b"\n") + 1
                    if cut:
                        written += _write(fd, data[:cut])
                        os.ftruncate(fd, written)
                        os.close(fd)
                        yield files[turn], 0, None
                        sent += 1
                        turn = sent % ring
                        fd = os.open(files[turn], os.O_WRONLY | os.O_CREAT, 0o600)
                        written = 0
                        data = data[cut:]
                written += _write(fd, data)
        os.ftruncate(fd, written)
    finally:
        os.close(fd)
    if written or not sent:
        yield files[turn], 0, None


def _write(fd: int, data: memoryview) -> int:
    """Write all of ``data``; its length."""
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])
    return done


def _rename(part: ReadState, name: str) -> None:
    """Give what a worker counted reading a spooled segment the name of the file it came from."""
    part.corrupt_examples = [(name, line, why) for _, line, why in part.corrupt_examples]
    part.truncated_last_line = [name for _ in part.truncated_last_line]


def _cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _forkable() -> bool:
    """Workers are forked (they start in milliseconds, with the readers already imported), which
    only Linux does safely; a daemonic process (itself a pool worker) may not have children; and
    a process with other threads is not forked (a lock one of them holds would stay held in the
    child forever: the audit at the end of a session runs beside the broker's threads)."""
    import multiprocessing
    import threading

    return (
        sys.platform == "linux"
        and threading.active_count() == 1
        and "fork" in multiprocessing.get_all_start_methods()
        and not multiprocessing.current_process().daemon
    )
