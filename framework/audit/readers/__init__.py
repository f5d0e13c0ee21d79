"""Transcript readers, one per agent CLI, and automatic format detection.

``transcript_files(path)`` finds what to read under a file or directory, ``detect(file)`` names the
format, and ``READERS[format].events(file, state)`` streams its events.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from framework.audit.readers.base import DECODE_ERRORS, Reader, ReaderStats, ReadState, open_binary
from framework.audit.readers.claude import ClaudeReader
from framework.audit.readers.codex import CodexReader
from framework.audit.readers.gemini import GeminiReader
from framework.audit.readers.opencode import OpenCodeReader

READERS: dict[str, Reader] = {
    r.name: r for r in (ClaudeReader(), CodexReader(), GeminiReader(), OpenCodeReader())
}
FORMATS = tuple(READERS)
CLAUDE_TYPES = frozenset(
    {"user", "assistant", "system", "summary", "file-history-snapshot", "queue-operation"}
)
CLAUDE_STREAM_TYPES = frozenset({"system", "user", "assistant", "result"})
CODEX_TYPES = frozenset({"session_meta", "turn_context", "response_item", "event_msg", "compacted"})
SQLITE_MAGIC = b"SQLite format 3\x00"

__all__ = [
    "FORMATS",
    "READERS",
    "ReadState",
    "ReaderStats",
    "TranscriptError",
    "detect",
    "transcript_files",
]


class TranscriptError(ValueError):
    """The input is not a transcript we can read; the message says what was found and what to pass."""


DETECT_BYTES = 1 << 20
"""Bytes read to detect a format; a first record longer than this is recognized by its keys."""
DETECT_LINES = 20
HEAD_KEYS = (
    (re.compile(rb'"type"\s*:\s*"(?:session_meta|turn_context|response_item|event_msg)"'), "codex"),
    (re.compile(rb'"(?:parentUuid|sessionId)"\s*:'), "claude"),
    (re.compile(rb'"(?:\$set|\$rewindTo|projectHash)"\s*:'), "gemini"),
)
"""Keys that name a format, for a first record cut off by :data:`DETECT_BYTES`."""


def detect(path: Path) -> str:
    """The format of one transcript file or OpenCode storage directory, from its content."""
    if path.is_dir():
        if (path / "storage" / "message").is_dir() or (path / "message").is_dir():
            return "opencode"
        raise TranscriptError(f"{path}: a directory, but not an OpenCode storage tree")
    try:
        with open_binary(path) as fh:
            head = fh.read(DETECT_BYTES)
    except OSError as exc:
        raise TranscriptError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # a damaged .zst frame: zstandard raises its own error type
        raise TranscriptError(f"{path}: cannot be decompressed ({exc})") from None
    if head.startswith(SQLITE_MAGIC):
        return "opencode"
    document = _whole_document(head, path)
    if document is not None:
        return document
    lines = head.split(b"\n")
    cut = len(head) == DETECT_BYTES and not head.endswith(b"\n")
    for number, line in enumerate(lines[:DETECT_LINES]):
        if not line.strip():
            continue
        if cut and number == len(lines) - 1:
            return _by_keys(line, path)
        try:
            record = msgspec.json.decode(line)
        except DECODE_ERRORS:
            continue
        found = _record_format(record)
        if found is not None:
            return found
    raise _unknown(path)


def _record_format(record: object) -> str | None:
    """The format one JSONL record belongs to, or None when it does not say."""
    if not isinstance(record, dict):
        return None
    kind = record.get("type")
    if kind in CODEX_TYPES or ("instructions" in record and "id" in record):
        return "codex"
    if "$set" in record or "$rewindTo" in record or "projectHash" in record or kind == "gemini":
        return "gemini"
    if kind in CLAUDE_TYPES and (
        "parentUuid" in record or "sessionId" in record or kind == "summary"
    ):
        return "claude"
    if kind in CLAUDE_STREAM_TYPES and "session_id" in record:
        return "claude"  # claude -p --output-format stream-json
    if kind in ("message", "function_call", "reasoning"):
        return "codex"
    return None


def _whole_document(head: bytes, path: Path) -> str | None:
    """The format of a file that is one JSON document (not JSONL): a Gemini CLI legacy session
    (an object with a ``messages`` list), or an error naming what else it is."""
    if path.suffix != ".json":
        return None
    try:
        doc = msgspec.json.decode(head)
    except DECODE_ERRORS:
        return None  # a larger document, or JSONL named .json: read its lines
    if isinstance(doc, dict):
        if isinstance(doc.get("messages"), list) and (
            "sessionId" in doc or "projectHash" in doc or "startTime" in doc
        ):
            return "gemini"
        if isinstance(doc.get("id"), str) and doc["id"].startswith("ses_"):
            raise TranscriptError(
                f"{path}: an OpenCode session record (storage/session/...); pass the storage "
                "directory that holds session/, message/ and part/, or opencode.db"
            )
        if isinstance(doc.get("sessionID"), str) and ("role" in doc or "messageID" in doc):
            raise TranscriptError(
                f"{path}: one OpenCode message or part; pass the storage directory that holds "
                "session/, message/ and part/, or opencode.db"
            )
    if _record_format(doc) is None:
        raise _unknown(path)
    return None


def _by_keys(line: bytes, path: Path) -> str:
    window = line[:DETECT_BYTES]
    for pattern, name in HEAD_KEYS:
        if pattern.search(window):
            return name
    raise _unknown(path)


def _unknown(path: Path) -> TranscriptError:
    return TranscriptError(
        f"{path}: not a transcript of a known format ({', '.join(FORMATS)}); pass a Claude Code "
        ".jsonl (or claude -p --output-format stream-json output), a Codex rollout "
        ".jsonl/.jsonl.zst, a Gemini CLI session .json/.jsonl, or an OpenCode opencode.db or "
        "storage directory"
    )


def transcript_files(path: Path) -> list[Path]:
    """The transcript files to read for ``path``: itself, or the transcripts inside a directory."""
    if not path.exists():
        raise TranscriptError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    if (path / "opencode.db").is_file():
        return [path / "opencode.db"]
    if (path / "storage" / "message").is_dir() or (path / "message").is_dir():
        return [path]
    found = []
    for candidate in sorted(path.rglob("*")):
        if not candidate.is_file() or "subagents" in candidate.parts[len(path.parts) :]:
            continue
        if candidate.name == "session.json":
            continue
        if candidate.name.endswith((".jsonl", ".jsonl.zst", ".json", ".db")):
            found.append(candidate)
    if not found:
        raise TranscriptError(
            f"{path}: no transcript files inside (looked for *.jsonl, *.jsonl.zst, *.json, *.db)"
        )
    return found
