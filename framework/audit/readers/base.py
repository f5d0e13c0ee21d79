"""What every reader shares: streamed lines, counters for what could not be read, event numbering."""

from __future__ import annotations

import io
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

import msgspec
from pydantic import BaseModel

from framework.audit.events import Event

T = TypeVar("T")

CHUNK_BYTES = 4 << 20
"""Bytes read at a time; memory stays near this (plus the longest line), whatever the file size."""


class ReaderStats(BaseModel):
    """What a reader saw and what it could not use: reported, never raised."""

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

    def check_fields(self, shape: str, raw: bytes, known: frozenset[str]) -> None:
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


def iter_lines(path: Path, state: ReadState) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(line_number, line, is_last_without_newline)`` reading a chunk at a time."""
    state.files.append(str(path))
    number = 0
    rest = b""
    with open_binary(path) as fh:
        while True:
            chunk = fh.read(CHUNK_BYTES)
            if not chunk:
                break
            state.bytes_read += len(chunk)
            lines = (rest + chunk if rest else chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                yield number, line, False
    if rest.strip():
        number += 1
        yield number, rest, True
    state.lines += number


def decode_lines(
    path: Path,
    decoder: msgspec.json.Decoder[T],
    state: ReadState,
    wanted: Callable[[bytes], bool] | None = None,
) -> Iterator[tuple[int, bytes, T]]:
    """Decode each non-blank line; corrupt lines and a cut-off last line are counted and skipped.

    ``wanted`` is a cheap byte test: a line it rejects cannot hold anything the reader uses, so it
    is counted as skipped and never decoded (the speed of long transcripts comes from this).
    """
    source = path.name
    decode = decoder.decode
    for number, line, last in iter_lines(path, state):
        if not line or line.isspace():
            continue
        if wanted is not None and not last and not wanted(line):
            state.skipped_lines += 1
            continue
        try:
            record = decode(line)
        except msgspec.DecodeError as exc:
            if last and not isinstance(exc, msgspec.ValidationError):
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
