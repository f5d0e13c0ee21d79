"""What every reader shares: streamed lines, counters for what could not be read, event numbering."""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeAlias, TypeVar

import msgspec
from pydantic import BaseModel

from framework.audit.events import Event

T = TypeVar("T")

DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What decoding a line can raise: msgspec raises ``UnicodeDecodeError`` itself, not a
``DecodeError``, for bytes in a string that are not UTF-8, and ``RecursionError`` for values
nested deeper than it goes."""

CHUNK_BYTES = 1 << 20
"""Bytes read at a time. Memory stays near this (plus the longest line) whatever the file size; a
chunk small enough to stay in the CPU cache is faster to split than a larger one."""

Line: TypeAlias = bytes | memoryview
"""One line of a file without its newline: usually a zero-copy view into the chunk it came from."""


class ReaderStats(BaseModel):
    """What a reader saw and what it could not use: reported, never raised.

    ``records`` counts the lines that are well-formed records, ``skipped_lines`` those of them whose
    type the reader does not use (bookkeeping, UI echoes), ``corrupt_lines`` the rest.
    """

    format: str = ""
    files: list[str] = []
    bytes_read: int = 0
    lines: int = 0
    records: int = 0
    skipped_lines: int = 0
    events: int = 0
    corrupt_lines: int = 0
    corrupt_examples: list[str] = []
    truncated_last_line: list[str] = []
    unknown_record_types: dict[str, int] = {}
    unknown_fields: dict[str, list[str]] = {}
    unreadable: list[str] = []
    """``file:line: why`` for each file that could not be read to its end (permission, I/O error,
    bytes that are not UTF-8 where the format needs text, a damaged database)."""
    session_ids: list[str] = []
    cli_versions: list[str] = []
    cwds: list[str] = []


SESSION_FACTS = ("session_ids", "cli_versions", "cwds")
MAX_FACT_VALUES = 20
"""Distinct values kept of each session fact: a resumed session has a few, a hostile file many."""


@dataclass
class ReadState:
    """Mutable counters while streaming; becomes :class:`ReaderStats` at the end."""

    format: str
    files: list[str] = field(default_factory=list)
    bytes_read: int = 0
    lines: int = 0
    records: int = 0
    skipped_lines: int = 0
    events: int = 0
    corrupt_lines: int = 0
    corrupt_examples: list[tuple[str, int, str]] = field(default_factory=list)
    """``(file name, line, why)`` of the first ten corrupt lines."""
    truncated_last_line: list[str] = field(default_factory=list)
    unknown_record_types: dict[str, int] = field(default_factory=dict)
    unknown_fields: dict[str, list[str]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    cli_versions: list[str] = field(default_factory=list)
    cwds: list[str] = field(default_factory=list)
    _checked_shapes: set[str] = field(default_factory=set)

    def fact(self, name: str, value: object) -> None:
        """Remember a session fact (``session_ids``, ``cli_versions``, ``cwds``) read from a record,
        in order of first appearance."""
        values: list[str] = getattr(self, name)
        if (
            isinstance(value, str)
            and value
            and value not in values
            and len(values) < MAX_FACT_VALUES
        ):
            values.append(value[:300])

    def cannot_read(self, source: str, line: int, why: str) -> None:
        """The rest of ``source`` could not be read (from ``line``; 0: the file as a whole)."""
        if len(self.unreadable) < 100:
            self.unreadable.append(f"{source}:{line}: {why[:300]}")

    def corrupt(self, source: str, line: int, why: str) -> None:
        self.corrupt_lines += 1
        if len(self.corrupt_examples) < 10:
            self.corrupt_examples.append((source, line, why[:200]))

    def unknown_type(self, name: str) -> None:
        key = name or "(none)"
        self.unknown_record_types[key] = self.unknown_record_types.get(key, 0) + 1

    def check_fields(self, shape: str, raw: Line, known: frozenset[str]) -> None:
        """Note keys we do not read, once per record shape, so format drift shows up in the report."""
        if shape in self._checked_shapes:
            return
        self._checked_shapes.add(shape)
        try:
            obj = msgspec.json.decode(raw)
        except DECODE_ERRORS:
            return
        if isinstance(obj, dict):
            extra = sorted(k for k in obj if k not in known)
            if extra:
                self.unknown_fields[shape] = extra

    def merge(self, part: ReadState, line_offset: int) -> None:
        """Add what was counted reading a later part of the file (:func:`iter_blocks` with
        ``start``), whose line numbers start ``line_offset`` lines into the file. Merging the parts
        in file order gives what reading the file in one go counts."""
        self.bytes_read += part.bytes_read
        self.lines += part.lines
        self.records += part.records
        self.skipped_lines += part.skipped_lines
        self.corrupt_lines += part.corrupt_lines
        for source, line, why in part.corrupt_examples[: max(0, 10 - len(self.corrupt_examples))]:
            self.corrupt_examples.append((source, line + line_offset, why))
        self.truncated_last_line.extend(part.truncated_last_line)
        for name, count in part.unknown_record_types.items():
            self.unknown_record_types[name] = self.unknown_record_types.get(name, 0) + count
        for shape, extra in part.unknown_fields.items():
            if shape not in self._checked_shapes:
                self.unknown_fields[shape] = extra
        self._checked_shapes |= part._checked_shapes
        self.unreadable.extend(part.unreadable)
        for name in SESSION_FACTS:
            for value in getattr(part, name):
                self.fact(name, value)

    def freeze(self) -> ReaderStats:
        return ReaderStats(
            format=self.format,
            files=self.files,
            bytes_read=self.bytes_read,
            lines=self.lines,
            records=self.records,
            skipped_lines=self.skipped_lines,
            events=self.events,
            corrupt_lines=self.corrupt_lines,
            corrupt_examples=[f"{src}:{line}: {why}" for src, line, why in self.corrupt_examples],
            truncated_last_line=self.truncated_last_line,
            unknown_record_types=dict(self.unknown_record_types),
            unknown_fields=self.unknown_fields,
            unreadable=self.unreadable,
            session_ids=self.session_ids,
            cli_versions=self.cli_versions,
            cwds=self.cwds,
        )


class Reader(Protocol):
    """A transcript format: ``events`` streams one session's files as events."""

    name: str

    def events(self, path: Path, state: ReadState) -> Iterator[Event]: ...


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed on the fly when it ends in ``.zst``."""
    fh = path.open("rb")
    if path.suffix == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh, closefd=True))
    return fh


def _chunks(path: Path, state: ReadState, start: int, end: int | None) -> Iterator[bytes]:
    """The bytes of the file from ``start`` to ``end`` (None: to its end), a chunk at a time."""
    state.files.append(str(path))
    with open_binary(path) as fh:
        if start:
            fh.seek(start)
        left = end - start if end is not None else -1
        read = fh.read
        while chunk := read(CHUNK_BYTES if left < 0 else min(CHUNK_BYTES, left)):
            if left > 0:
                left -= len(chunk)
            state.bytes_read += len(chunk)
            yield chunk


def iter_lines(
    path: Path, state: ReadState, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, Line, bool]]:
    """Yield ``(line_number, line, is_last_without_newline)`` reading a chunk at a time.

    Lines are memoryviews into the chunk (no copy per line); only a line that spans two chunks is
    joined into new bytes. A view keeps its chunk alive, so a caller may hold on to it.
    ``start`` and ``end``: only the lines in between (see :func:`iter_blocks`).
    """
    number = 0
    pieces: list[bytes] = []
    for chunk in _chunks(path, state, start, end):
        find = chunk.find
        at = 0
        if pieces:
            stop = find(b"\n")
            if stop < 0:
                pieces.append(chunk)
                continue
            pieces.append(chunk[:stop])
            number += 1
            yield number, b"".join(pieces), False
            pieces = []
            at = stop + 1
        view = memoryview(chunk)
        while (stop := find(b"\n", at)) >= 0:
            number += 1
            yield number, view[at:stop], False
            at = stop + 1
        if at < len(chunk):
            pieces.append(chunk[at:])
    rest = b"".join(pieces)
    if rest.strip():
        number += 1
        yield number, rest, True
    state.lines += number


def decode_lines(
    path: Path,
    decoder: msgspec.json.Decoder[T],
    state: ReadState,
    wanted: Callable[[Line], bool] | None = None,
    unused: Callable[[Line], bool] | None = None,
    start: int = 0,
    end: int | None = None,
) -> Iterator[tuple[int, Line, T]]:
    """Decode each non-blank line; corrupt lines and a cut-off last line are counted and skipped.

    ``wanted`` is a cheap test run before decoding: a line it rejects must be well-formed JSON
    (the test checks that) holding nothing the reader uses; it is counted as skipped and never
    decoded into objects. ``unused`` is asked about a well-formed line that does not fit the
    reader's types: when it says the record's type is one the reader ignores, the line is skipped
    instead of being counted as corrupt. ``start`` and ``end``: only the lines in between (see
    :func:`iter_blocks`).
    """
    source = path.name
    decode = decoder.decode
    for number, line, last in iter_lines(path, state, start, end):
        if not line:
            continue
        if line[0] != 123 and not bytes(line).strip():  # 123 is "{": blank lines are rare
            continue
        if wanted is not None and not last and not wanted(line):
            state.records += 1
            state.skipped_lines += 1
            continue
        try:
            record = decode(line)
        except DECODE_ERRORS as exc:
            _undecodable(state, source, number, line, last, exc, unused)
            continue
        state.records += 1
        yield number, line, record


def _undecodable(
    state: ReadState,
    source: str,
    number: int,
    line: Line,
    last: bool,
    error: Exception,
    unused: Callable[[Line], bool] | None,
) -> None:
    """Count a line the decoder refused: skipped (a record type the reader ignores), a cut-off last
    line, or corrupt."""
    if isinstance(error, UnicodeDecodeError):
        state.corrupt(source, number, f"not UTF-8 text: {error}")
    elif isinstance(error, msgspec.ValidationError):
        if unused is not None and unused(line):
            state.records += 1
            state.skipped_lines += 1
        else:
            state.corrupt(source, number, str(error))
    elif last:
        state.truncated_last_line.append(source)
    else:
        state.corrupt(source, number, str(error))


@dataclass(frozen=True)
class Block:
    """``lines`` whole lines of a file, ``data[start:end]``, ``first`` being the number of the
    first. ``regular`` when each line starts with ``{`` and ends with ``}``: then, if the block
    decodes, every line break lies between two top-level values (JSON, and msgspec, allow no raw
    newline inside a string, and ``}`` then ``{`` cannot follow each other inside a value), so each
    line holds at least one record."""

    data: bytes
    start: int
    end: int
    first: int
    lines: int
    regular: bool

    @property
    def view(self) -> memoryview:
        return memoryview(self.data)[self.start : self.end]

    def line(self, number: int) -> bytes:
        """Line ``number`` again (a copy; for the rare caller that needs the raw text)."""
        data, at = self.data, self.start
        for _ in range(number - self.first):
            at = data.index(b"\n", at, self.end) + 1
        stop = data.find(b"\n", at, self.end)
        return data[at : stop if stop >= 0 else self.end]


def iter_blocks(
    path: Path, state: ReadState, start: int = 0, end: int | None = None
) -> Iterator[tuple[Block, bool]]:
    """Yield ``(block, is_last_line_without_newline)``: whole lines a chunk at a time, each block
    ending with a newline except a last line without one. A block points into the chunk it came
    from (no copy); only a line spanning two chunks is joined into new bytes (a block of its own).

    ``start`` and ``end``: read only the bytes in between (to the end of the file when ``end`` is
    None), as if they were the whole file; both must be line starts (see :func:`line_start`)."""
    number = 1
    pieces: list[bytes] = []
    for chunk in _chunks(path, state, start, end):
        first = 0
        if pieces:
            first = chunk.find(b"\n") + 1
            if first == 0:
                pieces.append(chunk)
                continue
            pieces.append(chunk[:first])
            line = b"".join(pieces)
            regular = line[:1] == b"{" and line[-2:] == b"}\n"
            yield Block(line, 0, len(line), number, 1, regular), False
            number += 1
            pieces = []
        last = chunk.rfind(b"\n") + 1
        if last > first:
            lines, regular = _scan_lines(chunk, first, last)
            yield Block(chunk, first, last, number, lines, regular), False
            number += lines
        if last < len(chunk):
            pieces.append(chunk[max(first, last) :])
    rest = b"".join(pieces)
    if rest.strip():
        yield Block(rest, 0, len(rest), number, 1, False), True
        number += 1
    state.lines += number - 1


def line_start(path: Path, offset: int) -> int:
    """The offset of the first line of the file that starts at or after ``offset`` (the size of
    the file when no line does): where a reader of the bytes from ``offset`` on may begin."""
    if offset <= 0:
        return 0
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if offset >= size:
            return size
        at = fh.seek(offset - 1)
        while chunk := fh.read(1 << 16):
            found = chunk.find(b"\n")
            if found >= 0:
                return at + found + 1
            at += len(chunk)
    return min(at, size)


def _scan_lines(data: bytes, start: int, end: int) -> tuple[int, bool]:
    """The number of lines in ``data[start:end]`` (which ends with a newline) and whether they are
    regular (see :class:`Block`). A loop of ``find`` (memchr) is several times faster than
    ``bytes.count``, which tests one byte at a time."""
    find = data.find
    count = 0
    regular = data[start] == 123  # "{"
    at = find(b"\n", start, end)
    while at >= 0:
        count += 1
        if data[at - 1] != 125 or (at + 1 < end and data[at + 1] != 123):  # "}", "{"
            regular = False
        at = find(b"\n", at + 1, end)
    return count, regular


def decode_records(
    path: Path,
    decoder: msgspec.json.Decoder[T],
    state: ReadState,
    unused: Callable[[Line], bool] | None = None,
    fallback: msgspec.json.Decoder[Any] | None = None,
    start: int = 0,
    end: int | None = None,
) -> Iterator[tuple[Block, Iterable[int], list[Any]]]:
    """What :func:`decode_lines` reads, a block of lines at a time: ``(block, line numbers,
    records)``. One call decodes a megabyte of lines: for formats where most lines matter, the
    per-line work in Python would cost more than the decoding.

    A block is taken whole when its lines are regular (see :class:`Block`) and it decodes into as
    many records as it has lines: one record per line, as JSONL writers put them. Otherwise its
    lines are decoded one by one with the accounting of :func:`decode_lines` (blank, corrupt,
    unused, cut off).

    ``fallback``: a second decoder for the lines ``decoder`` refuses when decoded one by one (its
    records are yielded instead, and its error decides how a line that neither reads is counted).
    A reader can then decode with a narrow, fast type (a tagged union of the records it knows)
    and still read, and count, everything else exactly as a general type would.

    ``start`` and ``end``: only the lines in between (see :func:`iter_blocks`).
    """
    source = path.name
    decode, decode_block = decoder.decode, decoder.decode_lines
    for block, last in iter_blocks(path, state, start, end):
        first = block.first
        if block.regular and not last:
            try:
                records = decode_block(block.view)
            except DECODE_ERRORS:
                records = None
            if records is not None and len(records) == block.lines:
                state.records += len(records)
                yield block, range(first, first + len(records)), records
                continue
        lines = bytes(block.view).split(b"\n")
        if not last:
            lines.pop()  # the empty string after the block's final newline
        numbers: list[int] = []
        records = []
        for offset, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(decode(line))
            except DECODE_ERRORS as exc:
                error = exc
                if fallback is not None:
                    try:
                        records.append(fallback.decode(line))
                    except DECODE_ERRORS as again:
                        error = again
                    else:
                        numbers.append(first + offset)
                        continue
                _undecodable(state, source, first + offset, line, last, error, unused)
                continue
            numbers.append(first + offset)
        state.records += len(records)
        yield block, numbers, records


class RecentIds:
    """A bounded set: remembers the last ``size`` ids, so dedup memory does not grow with the file."""

    def __init__(self, size: int = 4096) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, key: str) -> bool:
        """True when ``key`` is new (and remembers it)."""
        if key in self._ids:
            return False
        self._ids[key] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


def count(value: object) -> int:
    """A token count from an untyped record: a non-negative int, else 0 (a string, a float, a
    boolean or a nested object in a hostile or damaged file counts nothing)."""
    return value if type(value) is int and value > 0 else 0


def text_or_none(value: object) -> str | None:
    """A string from an untyped record, None for any other type."""
    return value if isinstance(value, str) else None


def list_or_empty(value: object) -> list[Any]:
    """A list from an untyped record, empty for any other type."""
    return value if isinstance(value, list) else []


def first_str(obj: Any, *keys: str) -> str | None:
    """The first of ``keys`` whose value in the dict ``obj`` is a non-empty string."""
    if not isinstance(obj, dict):
        return None
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None
