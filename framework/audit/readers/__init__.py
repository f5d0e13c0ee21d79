"""Transcript readers, one per agent CLI, and automatic format detection.

``transcript_files(path)`` finds what to read under a file or directory, ``detect(file)`` names the
format, and ``READERS[format].events(file, state)`` streams its events.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from framework.audit.readers.base import Reader, ReaderStats, ReadState, open_binary
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


def detect(path: Path) -> str:
    """The format of one transcript file or OpenCode storage directory, from its first records."""
    if path.is_dir():
        if (path / "storage" / "message").is_dir() or (path / "message").is_dir():
            return "opencode"
        raise TranscriptError(f"{path}: a directory, but not an OpenCode storage tree")
    with open_binary(path) as fh:
        head = fh.read(1 << 16)
    if head.startswith(SQLITE_MAGIC):
        return "opencode"
    stripped = head.lstrip()
    if stripped.startswith(b"{") and path.suffix == ".json":
        return "gemini"
    for line in head.split(b"\n")[:20]:
        if not line.strip():
            continue
        try:
            record = msgspec.json.decode(line)
        except msgspec.DecodeError:
            continue
        if not isinstance(record, dict):
            continue
        kind = record.get("type")
        if kind in CODEX_TYPES or ("instructions" in record and "id" in record):
            return "codex"
        if "$set" in record or "$rewindTo" in record or "projectHash" in record or kind == "gemini":
            return "gemini"
        if kind in CLAUDE_TYPES and (
            "parentUuid" in record or "sessionId" in record or kind == "summary"
        ):
            return "claude"
        if kind in ("message", "function_call", "reasoning"):
            return "codex"
    raise TranscriptError(
        f"{path}: not a transcript of a known format ({', '.join(FORMATS)}); pass a Claude Code "
        ".jsonl, a Codex rollout .jsonl/.jsonl.zst, a Gemini CLI session .json/.jsonl, or an "
        "OpenCode opencode.db or storage directory"
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
