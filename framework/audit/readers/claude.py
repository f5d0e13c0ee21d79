"""Claude Code transcripts: ``~/.claude/projects/<slug>/<session>.jsonl`` (+ ``<session>/subagents/``).

One JSON object per line. ``type`` is ``user``, ``assistant``, ``system`` (e.g. subtype
``compact_boundary``), ``summary`` or bookkeeping (``file-history-snapshot``, ``queue-operation``).
An assistant API message is written as one line per content block, each repeating the message's
``id`` and ``usage``: usage is counted once per message id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from msgspec.structs import replace

from framework.audit.events import Event, EventKind, clip, parse_timestamp
from framework.audit.readers.base import Line, ReadState, RecentIds, decode_lines
from framework.audit.readers.tools import tool_call_events

BOOKKEEPING_TYPES = frozenset(
    {
        "file-history-snapshot", "queue-operation", "progress", "attachment", "atis-latch",
        "last-prompt", "api-request", "api-request-shape", "api-request-blob", "tools-used",
        "cost-state", "custom-title", "tag",
    }
)  # fmt: skip
KNOWN_TOP_LEVEL = frozenset(
    {
        "type", "uuid", "parentUuid", "logicalParentUuid", "isSidechain", "sessionId", "agentId",
        "timestamp", "message", "summary", "leafUuid", "subtype", "content", "isCompactSummary",
        "isMeta", "level", "cwd", "version", "gitBranch", "userType", "requestId", "toolUseResult",
        "compactMetadata", "isVisibleInTranscriptOnly", "slug", "thinkingMetadata", "todos",
        "messageId", "snapshot", "isSnapshotUpdate", "operation", "sourceToolUseID", "toolUseID",
        "isApiErrorMessage", "error", "permissionMode",
    }
)  # fmt: skip


class Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class Block(msgspec.Struct, gc=False):
    type: str = ""
    text: str | None = None
    thinking: str | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw(b"")
    tool_use_id: str | None = None
    content: msgspec.Raw = msgspec.Raw(b"")
    is_error: bool | None = None


class Message(msgspec.Struct, gc=False):
    role: str | None = None
    id: str | None = None
    model: str | None = None
    content: str | list[Block] | None = None
    usage: Usage | None = None


class Record(msgspec.Struct, gc=False):
    type: str = ""
    isSidechain: bool | None = None
    agentId: str | None = None
    timestamp: str | None = None
    message: Message | None = None
    summary: str | None = None
    subtype: str | None = None
    content: str | None = None
    isCompactSummary: bool | None = None
    isMeta: bool | None = None
    level: str | None = None


_decoder = msgspec.json.Decoder(Record)


class _Head(msgspec.Struct, gc=False):
    type: str = ""


_head = msgspec.json.Decoder(_Head)
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

BOOKKEEPING_HEAD = re.compile(
    rb'\{(?:"type":"([\w-]+)"'
    rb'|"parentUuid":(?:null|"[^"\\]*"),"isSidechain":(?:true|false),"attachment":\{)'
)
"""How Claude Code starts a line: ``{"type":"X"`` (bookkeeping records) or, for an attachment, the
``parentUuid`` and ``isSidechain`` keys followed by the ``attachment`` object. Matched from the
first byte with only simple values in between, so a match is a top-level key, never text inside a
string or a nested object."""
ATTACHMENT_TYPE = re.compile(rb',"type":"attachment"[,}]')


def _wanted(line: Line) -> bool:
    """Bookkeeping records (API request copies, attachments, snapshots) are the bulk of a transcript
    and carry nothing the audit uses. They are recognized from their first bytes and skipped
    without being parsed; a line cut short (not ending in ``}``) is still decoded, so it is counted
    as corrupt. Lines not recognized this way are decoded in full."""
    head = BOOKKEEPING_HEAD.match(line)
    if head is None or line[-1] != 125:  # 125 is "}"
        return True
    kind = head.group(1)
    if kind is not None:
        return kind.decode() not in BOOKKEEPING_TYPES
    return ATTACHMENT_TYPE.search(line) is None


def _unused(line: Line) -> bool:
    """A record that does not fit :class:`Record` but is bookkeeping is skipped, not corrupt."""
    try:
        return _head.decode(line).type in BOOKKEEPING_TYPES
    except msgspec.DecodeError:
        return False


class MessageUsage:
    """Counts each API message's usage once, when a transcript is read in segments. Claude Code
    writes a message as one line per content block, each repeating the message's ``usage``; a
    reader of the whole file counts the first line of each message id it sees (:class:`RecentIds`).
    A segment is read without knowing the ids before it, so it yields the usage of every line,
    and :meth:`settle_range`, run on the segments in file order, keeps what reading the whole file
    would have kept."""

    def __init__(self) -> None:
        self.counted = RecentIds()

    def settle_range(self, events: list[Event], carry: None) -> Iterator[Event]:
        usage, counted = EventKind.TOKEN_USAGE, self.counted
        for event in events:
            message = event.message_id
            if event.kind is usage and message is not None and not counted.add(message):
                continue
            yield event


class ClaudeReader:
    name = "claude"
    carry_type = type(None)

    def events(self, path: Path, state: ReadState) -> Iterator[Event]:
        yield from self._file(path, state, agent=None, counted=RecentIds())
        yield from self.companions(path, state)

    def companions(self, path: Path, state: ReadState) -> Iterator[Event]:
        """The session's subagent transcripts, read after it."""
        subagents = path.with_suffix("") / "subagents"
        if subagents.is_dir():
            for sub in sorted(subagents.glob("*.jsonl")):
                agent = sub.stem
                yield Event(
                    kind=EventKind.SUBAGENT_START, agent=agent, source=sub.name, sidechain=True
                )
                yield from self._file(sub, state, agent=agent, counted=RecentIds())
                yield Event(
                    kind=EventKind.SUBAGENT_END, agent=agent, source=sub.name, sidechain=True
                )

    def read_range(
        self, path: Path, state: ReadState, start: int, end: int | None
    ) -> tuple[list[Event], None]:
        """The events of the lines between two line starts of a session transcript (not its
        subagents), with the usage of every line (see :class:`MessageUsage`)."""
        events = self._file(path, state, agent=None, counted=None, start=start, end=end)
        return list(events), None

    def settler(self) -> MessageUsage:
        return MessageUsage()

    def _file(
        self,
        path: Path,
        state: ReadState,
        agent: str | None,
        counted: RecentIds | None,
        start: int = 0,
        end: int | None = None,
    ) -> Iterator[Event]:
        """The events of a transcript, counting each message's usage once in ``counted`` (None:
        the usage of every line that repeats it, for :class:`MessageUsage` to settle)."""
        source = path.name
        for number, line, rec in decode_lines(path, _decoder, state, _wanted, _unused, start, end):
            kind = rec.type
            if kind in BOOKKEEPING_TYPES:
                state.skipped_lines += 1
                continue
            state.check_fields(f"claude:{kind}", line, KNOWN_TOP_LEVEL)
            base = Event(
                kind=EventKind.USER,
                source=source,
                line=number,
                ts=parse_timestamp(rec.timestamp),
                agent=rec.agentId or agent,
                sidechain=bool(rec.isSidechain) or agent is not None,
            )
            if kind == "assistant" or kind == "user":
                if rec.message is not None:
                    yield from self._message(rec, rec.message, base, counted, state)
            elif kind == "system":
                if rec.subtype == "compact_boundary":
                    yield replace(base, kind=EventKind.COMPACTION, text=clip(rec.content))
                elif rec.level == "error":
                    yield replace(base, kind=EventKind.ERROR, text=clip(rec.content))
            elif kind == "summary":
                yield replace(base, kind=EventKind.SUMMARY, text=clip(rec.summary))
            else:
                state.unknown_type(f"claude:{kind}")

    def _message(
        self,
        rec: Record,
        msg: Message,
        base: Event,
        counted: RecentIds | None,
        state: ReadState,
    ) -> Iterator[Event]:
        content = msg.content
        if rec.type == "user":
            if isinstance(content, str):
                if rec.isCompactSummary:
                    yield replace(
                        base, kind=EventKind.COMPACTION, text=clip(content), text_size=len(content)
                    )
                elif not rec.isMeta:
                    yield replace(
                        base, kind=EventKind.USER, text=clip(content), text_size=len(content)
                    )
                return
            for block in content or ():
                if block.type == "tool_result":
                    head = _result_head(block.content) if block.is_error else None
                    yield replace(
                        base,
                        kind=EventKind.TOOL_RESULT,
                        call_id=block.tool_use_id,
                        status="error" if block.is_error else "ok",
                        exit_code=_exit_code(head),
                        output_size=len(block.content),
                        text=head,
                    )
                elif block.type == "text" and block.text is not None and not rec.isMeta:
                    yield replace(
                        base, kind=EventKind.USER, text=clip(block.text), text_size=len(block.text)
                    )
            return
        model = msg.model
        if (
            msg.usage is not None
            and msg.id is not None
            and (counted is None or counted.add(msg.id))
        ):
            u = msg.usage
            yield replace(
                base,
                kind=EventKind.TOKEN_USAGE,
                model=model,
                message_id=msg.id,
                input_tokens=u.input_tokens or 0,
                output_tokens=u.output_tokens or 0,
                cache_read_tokens=u.cache_read_input_tokens or 0,
                cache_write_tokens=u.cache_creation_input_tokens or 0,
            )
        if isinstance(content, str):
            yield replace(
                base,
                kind=EventKind.ASSISTANT,
                text=clip(content),
                text_size=len(content),
                model=model,
            )
            return
        for block in content or ():
            btype = block.type
            if btype == "text" and block.text is not None:
                yield replace(
                    base,
                    kind=EventKind.ASSISTANT,
                    text=clip(block.text),
                    text_size=len(block.text),
                    model=model,
                )
            elif btype == "tool_use" and block.name is not None:
                args = _decode_args(block.input)
                yield from tool_call_events(
                    replace(base, call_id=block.id, model=model), block.name, args
                )
            elif btype == "thinking" or btype == "redacted_thinking":
                text = block.thinking or ""
                yield replace(base, kind=EventKind.THINKING, text=clip(text), text_size=len(text))
            else:
                state.unknown_type(f"claude:block:{btype}")


def _decode_args(raw: msgspec.Raw) -> Any:
    if not raw:
        return {}
    try:
        return _any.decode(raw)
    except msgspec.DecodeError:
        return {}


def _result_head(raw: msgspec.Raw) -> str | None:
    """The start of a failed tool's output (as stored: a JSON string or a list of text blocks)."""
    if not raw:
        return None
    try:
        value = _any.decode(raw)
    except msgspec.DecodeError:
        return None
    if isinstance(value, list):
        value = " ".join(b.get("text", "") for b in value if isinstance(b, dict))
    return clip(value, 500) if isinstance(value, str) else None


EXIT_CODE = re.compile(r"^Exit code (-?\d+)")


def _exit_code(head: str | None) -> int | None:
    """Claude Code starts a failed Bash result with ``Exit code N``."""
    match = EXIT_CODE.match(head) if head else None
    return int(match.group(1)) if match else None
