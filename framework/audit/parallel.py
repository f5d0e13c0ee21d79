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

Small files, compressed files and formats without :meth:`RangeReader.read_range` are read in this
process, as is everything where starting workers is not possible (one core, no ``fork``).
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from framework.audit.events import Event
from framework.audit.readers import READERS
from framework.audit.readers.base import ReadState, line_start

if TYPE_CHECKING:
    from concurrent.futures import Future

SEGMENT_BYTES = 8 << 20
"""Bytes of the file per segment: enough for the per-segment costs (a task, a message) not to
matter, small enough for a few in flight to stay a few megabytes of events."""
MIN_BYTES = 64 << 20
"""Smaller files are read in this process: starting workers would cost more than it saves."""
MAX_WORKERS = 4
"""Checking the events, in this process, takes about a third of the time reading them takes, so
more workers would wait for it."""
IN_FLIGHT = 2
"""Segments per worker read ahead of this process: enough to keep the workers busy, while the
memory they hold stays a few segments' events."""


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
    at most :data:`MAX_WORKERS`) when the file has ``min_bytes`` (default :data:`MIN_BYTES`)."""
    reader = READERS[fmt]
    if workers is None:
        workers = min(_cores(), MAX_WORKERS)
    if (
        workers < 2
        or not isinstance(reader, RangeReader)
        or path.suffix == ".zst"
        or not path.is_file()
        or path.stat().st_size < (MIN_BYTES if min_bytes is None else min_bytes)
        or not _forkable()
    ):
        return reader.events(path, state)
    return _segmented(reader, path, state, workers, segment_bytes or SEGMENT_BYTES)


def _segmented(
    reader: RangeReader, path: Path, state: ReadState, workers: int, segment_bytes: int
) -> Iterator[Event]:
    # here: a small file's audit need not import them
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = path.stat().st_size
    segments = (
        (start, start + segment_bytes if start + segment_bytes < size else None)
        for start in range(0, size, segment_bytes)
    )
    carry: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(reader.carry_type)
    settler = reader.settler()
    state.files.append(str(path))
    lines = 0
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=gc.freeze,  # the workers' collections skip what they were forked with
    )
    pending: deque[Future[bytes]] = deque()

    def submit(count: int) -> None:
        for start, end in itertools.islice(segments, count):
            pending.append(pool.submit(_read, reader.name, path, start, end))

    try:
        submit(IN_FLIGHT * workers)
        while pending:
            part = _segment.decode(pending.popleft().result())
            submit(1)
            for event in part.events:
                event.line += lines
            state.merge(part.state, lines)
            lines += part.state.lines
            yield from settler.settle_range(part.events, carry.decode(part.carry))
    finally:
        pool.shutdown(cancel_futures=True)
    yield from reader.companions(path, state)


def _read(fmt: str, path: Path, start: int, end: int | None) -> bytes:
    """In a worker: the segment of the lines starting from ``start`` up to ``end`` (any offsets:
    each segment begins at the first line that starts in it)."""
    reader = READERS[fmt]
    assert isinstance(reader, RangeReader)
    state = ReadState(format=fmt)
    first = line_start(path, start)
    stop = line_start(path, end) if end is not None else None
    events, carry = reader.read_range(path, state, first, stop)
    return _encoder.encode(
        Segment(events=events, carry=msgspec.Raw(_encoder.encode(carry)), state=state)
    )


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
