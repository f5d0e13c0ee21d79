"""What every reader shares: streamed lines, counters for what could not be read, event numbering."""

from __future__ import annotations

import io
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeAlias, TypeVar

import msgspec
from pydantic import BaseModel

from framework.audit.events import Event

T = TypeVar("T")

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
    corrupt_examples: list[str] = field(default_factory=list)
    truncated_last_line: list[str] = field(default_factory=list)
    unknown_record_types: Counter[str] = field(default_factory=Counter)
    unknown_fields: dict[str, list[str]] = field(default_factory=dict)
    _checked_shapes: set[str] = field(default_factory=set)

    def corrupt(self, source: str, line: int, why: str) -> None:
        self.corrupt_lines += 1
        if len(self.corrupt_examples) < 10:
            self.corrupt_examples.append(f"{source}:{line}: {why[:200]}")

    def unknown_type(self, name: str) -> None:
        self.unknown_record_types[name or "(none)"] += 1

    def check_fields(self, shape: str, raw: Line, known: frozenset[str]) -> None:
        """Note keys we do not read, once per record shape, so format drift shows up in the report."""
        if shape in self._checked_shapes:
            return
        self._checked_shapes.add(shape)
        try:
            obj = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return
        if isinstance(obj, dict):
            extra = sorted(k for k in obj if k not in known)
            if extra:
                self.unknown_fields[shape] = extra

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
            corrupt_examples=self.corrupt_examples,
            truncated_last_line=self.truncated_last_line,
            unknown_record_types=dict(self.unknown_record_types),
            unknown_fields=self.unknown_fields,
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


def iter_lines(path: Path, state: ReadState) -> Iterator[tuple[int, Line, bool]]:
    """Yield ``(line_number, line, is_last_without_newline)`` reading a chunk at a time.

    Lines are memoryviews into the chunk (no copy per line); only a line that spans two chunks is
    joined into new bytes. A view keeps its chunk alive, so a caller may hold on to it.
    """
    state.files.append(str(path))
    number = 0
    pieces: list[bytes] = []
    with open_binary(path) as fh:
        read = fh.read
        while chunk := read(CHUNK_BYTES):
            state.bytes_read += len(chunk)
            find = chunk.find
            start = 0
            if pieces:
                end = find(b"\n")
                if end < 0:
                    pieces.append(chunk)
                    continue
                pieces.append(chunk[:end])
                number += 1
                yield number, b"".join(pieces), False
                pieces = []
                start = end + 1
            view = memoryview(chunk)
            while (end := find(b"\n", start)) >= 0:
                number += 1
                yield number, view[start:end], False
                start = end + 1
            if start < len(chunk):
                pieces.append(chunk[start:])
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
) -> Iterator[tuple[int, Line, T]]:
    """Decode each non-blank line; corrupt lines and a cut-off last line are counted and skipped.

    ``wanted`` is a cheap test run before decoding: a line it rejects must be well-formed JSON
    (the test checks that) holding nothing the reader uses; it is counted as skipped and never
    decoded into objects. ``unused`` is asked about a well-formed line that does not fit the
    reader's types: when it says the record's type is one the reader ignores, the line is skipped
    instead of being counted as corrupt.
    """
    source = path.name
    decode = decoder.decode
    for number, line, last in iter_lines(path, state):
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
        except msgspec.ValidationError as exc:
            if unused is not None and unused(line):
                state.records += 1
                state.skipped_lines += 1
            else:
                state.corrupt(source, number, str(exc))
            continue
        except msgspec.DecodeError as exc:
            if last:
                state.truncated_last_line.append(source)
            else:
                state.corrupt(source, number, str(exc))
            continue
        state.records += 1
        yield number, line, record


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


def first_str(obj: Any, *keys: str) -> str | None:
    """The first of ``keys`` whose value in the dict ``obj`` is a non-empty string."""
    if not isinstance(obj, dict):
        return None
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None
