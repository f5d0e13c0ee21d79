"""Claude Code transcripts: ``~/.claude/projects/<slug>/<session>.jsonl`` (+ ``<session>/subagents/``),
and the ``--output-format stream-json`` output of ``claude -p``.

One JSON object per line. ``type`` is ``user``, ``assistant``, ``system`` (e.g. subtype
``compact_boundary``; in stream-json ``init``), ``summary``, stream-json's ``result``, or
bookkeeping (``file-history-snapshot``, ``queue-operation``, ...). An assistant API message is
written as one line per content block, each repeating the message's ``id`` and ``usage``, with a
placeholder ``output_tokens`` on the early blocks, and two API calls (``requestId``) can share a
message id: usage is counted once per ``(message.id, requestId)``, the largest value of each field
(:class:`MessageUsage`).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
from msgspec.structs import replace

from framework.audit.events import Event, EventKind, UserKind, clip, parse_timestamp
from framework.audit.readers.base import DECODE_ERRORS, Line, ReadState, decode_lines
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
        "isApiErrorMessage", "error", "permissionMode", "session_id", "parent_tool_use_id",
        "claude_code_version", "model", "tools", "mcp_servers", "apiKeySource",
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
    sessionId: str | None = None
    session_id: str | None = None
    """stream-json's name for ``sessionId``."""
    version: str | None = None
    claude_code_version: str | None = None
    cwd: str | None = None
    requestId: str | None = None
    parent_tool_use_id: str | None = None
    """stream-json: set on the messages of a sub-agent (the Task call it runs under)."""
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
SESSION_IDS, CLI_VERSIONS, CWDS = "session_ids", "cli_versions", "cwds"


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
    except DECODE_ERRORS:
        return False


class MessageUsage:
    """Counts each API call's usage once: per ``(message.id, requestId)``, the largest value of
    each field seen on any of its lines. The reader yields the usage of every line that carries
    one; :meth:`settle` turns them, in file order, into the growth over what that call has already
    counted (the first line: all of it), dropping lines that add nothing. The sum of a call's
    events is then its largest value per field, whichever of its lines holds it, and the result
    is the same whether the file is read in one go or in segments (:meth:`settle_range`). The
    last 4096 calls are remembered, so memory stays flat."""

    def __init__(self, size: int = 4096) -> None:
        self.seen: OrderedDict[tuple[str, str | None], tuple[int, int, int, int]] = OrderedDict()
        self.size = size

    def settle(self, events: Iterable[Event]) -> Iterator[Event]:
        usage, seen = EventKind.TOKEN_USAGE, self.seen
        for event in events:
            if event.kind is not usage or event.message_id is None:
                yield event
                continue
            key = (event.message_id, event.request_id)
            line = (
                event.input_tokens,
                event.output_tokens,
                event.cache_read_tokens,
                event.cache_write_tokens,
            )
            before = seen.get(key, (0, 0, 0, 0))
            most = tuple(max(a, b) for a, b in zip(before, line, strict=True))
            if most == before and key in seen:
                continue
            seen[key] = most  # type: ignore[assignment]
            seen.move_to_end(key)
            if len(seen) > self.size:
                seen.popitem(last=False)
            grown = [a - b for a, b in zip(most, before, strict=True)]
            event.input_tokens, event.output_tokens = grown[0], grown[1]
            event.cache_read_tokens, event.cache_write_tokens = grown[2], grown[3]
            yield event

    def settle_range(self, events: list[Event], carry: None) -> Iterator[Event]:
        return self.settle(events)


class ClaudeReader:
    name = "claude"
    carry_type = type(None)

    def events(self, path: Path, state: ReadState) -> Iterator[Event]:
        yield from MessageUsage().settle(self._file(path, state, agent=None))
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
                yield from MessageUsage().settle(self._file(sub, state, agent=agent))
                yield Event(
                    kind=EventKind.SUBAGENT_END, agent=agent, source=sub.name, sidechain=True
                )

    def read_range(
        self, path: Path, state: ReadState, start: int, end: int | None
    ) -> tuple[list[Event], None]:
        """The events of the lines between two line starts of a session transcript (not its
        subagents), with the usage of every line (see :class:`MessageUsage`)."""
        events = self._file(path, state, agent=None, start=start, end=end)
        return list(events), None

    def settler(self) -> MessageUsage:
        return MessageUsage()

    def _file(
        self,
        path: Path,
        state: ReadState,
        agent: str | None,
        start: int = 0,
        end: int | None = None,
    ) -> Iterator[Event]:
        """The events of a transcript, with the usage of every line that carries one (for
        :class:`MessageUsage` to settle)."""
        source = path.name
        fact = state.fact
        for number, line, rec in decode_lines(path, _decoder, state, _wanted, _unused, start, end):
            kind = rec.type
            if kind in BOOKKEEPING_TYPES:
                state.skipped_lines += 1
                continue
            state.check_fields(f"claude:{kind}", line, KNOWN_TOP_LEVEL)
            fact(SESSION_IDS, rec.sessionId or rec.session_id)
            fact(CLI_VERSIONS, rec.version or rec.claude_code_version)
            fact(CWDS, rec.cwd)
            base = Event(
                kind=EventKind.USER,
                source=source,
                line=number,
                ts=parse_timestamp(rec.timestamp),
                agent=rec.agentId or agent,
                sidechain=bool(rec.isSidechain or rec.parent_tool_use_id) or agent is not None,
                request_id=rec.requestId,
            )
            if kind == "assistant" or kind == "user":
                if rec.message is not None:
                    yield from self._message(rec, rec.message, base, state)
            elif kind == "system":
                if rec.subtype == "compact_boundary":
                    yield replace(base, kind=EventKind.COMPACTION, text=clip(rec.content))
                elif rec.level == "error":
                    yield replace(base, kind=EventKind.ERROR, text=clip(rec.content))
            elif kind == "summary":
                yield replace(base, kind=EventKind.SUMMARY, text=clip(rec.summary))
            elif kind == "result":  # stream-json's closing totals: the messages were counted
                state.skipped_lines += 1
            else:
                state.unknown_type(f"claude:{kind}")

    def _message(
        self,
        rec: Record,
        msg: Message,
        base: Event,
        state: ReadState,
    ) -> Iterator[Event]:
        content = msg.content
        if rec.type == "user":
            if isinstance(content, str):
                if rec.isCompactSummary:
                    yield replace(
                        base, kind=EventKind.COMPACTION, text=clip(content), text_size=len(content)
                    )
                else:
                    yield _user(base, rec, content)
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
                elif block.type == "text" and block.text is not None:
                    if rec.isCompactSummary:
                        yield replace(
                            base,
                            kind=EventKind.COMPACTION,
                            text=clip(block.text),
                            text_size=len(block.text),
                        )
                    else:
                        yield _user(base, rec, block.text)
            return
        model = msg.model
        if msg.usage is not None:
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


COMMAND_TAGS = ("<command-name>", "<command-message>", "<command-args>", "<bash-input>")
"""How Claude Code wraps a slash command (``/compact``) or a ``!`` shell command the person ran."""
OUTPUT_TAGS = ("<local-command-stdout>", "<local-command-stderr>", "<bash-stdout>", "<bash-stderr>")
INTERRUPT = "[Request interrupted by user"


def user_kind(text: str, meta: bool, sidechain: bool) -> UserKind:
    """What a user entry's text is (see :class:`UserKind`): only a prompt is what the person
    typed. A sub-agent's task prompt is written by the main agent, not the person."""
    if meta:
        return UserKind.META
    if sidechain:
        return UserKind.SIDECHAIN
    head = text.lstrip()[:40]
    if head.startswith(COMMAND_TAGS):
        return UserKind.SLASH_COMMAND
    if head.startswith(OUTPUT_TAGS):
        return UserKind.COMMAND_OUTPUT
    if head.startswith(INTERRUPT):
        return UserKind.INTERRUPT
    if head.startswith("Caveat: The messages below were generated by the user while running"):
        return UserKind.META
    return UserKind.PROMPT


def _user(base: Event, rec: Record, text: str) -> Event:
    return replace(
        base,
        kind=EventKind.USER,
        text=clip(text),
        text_size=len(text),
        user_kind=user_kind(text, bool(rec.isMeta), base.sidechain),
    )


def _decode_args(raw: msgspec.Raw) -> Any:
    if not raw:
        return {}
    try:
        return _any.decode(raw)
    except DECODE_ERRORS:
        return {}


def _result_head(raw: msgspec.Raw) -> str | None:
    """The start of a failed tool's output (as stored: a JSON string or a list of text blocks)."""
    if not raw:
        return None
    try:
        value = _any.decode(raw)
    except DECODE_ERRORS:
        return None
    if isinstance(value, list):
        value = " ".join(b.get("text", "") for b in value if isinstance(b, dict))
    return clip(value, 500) if isinstance(value, str) else None


EXIT_CODE = re.compile(r"^Exit code (-?\d+)")


def _exit_code(head: str | None) -> int | None:
    """Claude Code starts a failed Bash result with ``Exit code N``."""
    match = EXIT_CODE.match(head) if head else None
    return int(match.group(1)) if match else None
