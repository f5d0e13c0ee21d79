"""Codex rollouts: ``~/.codex/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl`` (or ``.jsonl.zst``).

Each line is ``{"timestamp", "type", "payload"}`` with ``type`` one of ``session_meta``,
``turn_context``, ``response_item`` (messages, reasoning, ``function_call`` whose ``arguments`` is a
JSON *string*, ``function_call_output``, ``custom_tool_call`` for apply_patch), ``event_msg``
(``token_count`` with cumulative usage; the rest repeat response items for the UI) and
``compacted``. Older rollouts wrote the item itself on each line, without the envelope.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Union

import msgspec
from msgspec.structs import replace

from framework.audit.events import Event, Kinds, UserKind, clip, parse_timestamp
from framework.audit.readers.base import DECODE_ERRORS, Block, Line, ReadState, decode_records
from framework.audit.readers.tools import tool_call_events

ENVELOPE_TYPES = frozenset(
    {"session_meta", "turn_context", "response_item", "event_msg", "compacted"}
)
QUIET_ENVELOPES = frozenset({"world_state", "token_usage_record"})
"""Newer record types we know and do not need: usage per response repeats ``token_count``."""
ITEM_KEYS = frozenset(
    {
        "type", "role", "content", "name", "arguments", "input", "call_id", "output", "summary",
        "action", "status", "id", "encrypted_content", "timestamp", "payload",
    }
)  # fmt: skip
UI_EVENTS = frozenset(
    {
        "agent_message", "agent_reasoning", "agent_reasoning_raw_content",
        "exec_command_begin", "exec_command_end", "exec_command_output_delta", "patch_apply_begin",
        "patch_apply_end", "task_started", "task_complete", "turn_aborted", "mcp_tool_call_begin",
        "mcp_tool_call_end", "web_search_begin", "web_search_end", "turn_diff", "plan_update",
        "entered_review_mode", "exited_review_mode", "context_compacted", "item_completed",
        "agent_message_delta", "reasoning_content_delta", "stream_error", "background_event",
        "view_image_tool_call", "undo_started", "undo_completed", "get_history_entry_response",
        "thread_settings_applied", "item_started", "warning",
    }
)  # fmt: skip
RESULT_ITEMS = frozenset(
    {"function_call_output", "custom_tool_call_output", "local_shell_call_output"}
)
EXIT_CODE = re.compile(rb"(?:Exit code|exit_code\"?|exited with code):?\s*(-?\d+)")


class Text(msgspec.Struct, gc=False):
    type: str = ""
    text: str | None = None


class Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_output_tokens: int | None = None


class TokenInfo(msgspec.Struct, gc=False):
    total_token_usage: Usage | None = None


class Item(msgspec.Struct, gc=False):
    type: str = ""
    timestamp: str | None = None
    payload: Item | None = None
    role: str | None = None
    content: list[Text] | None = None
    summary: list[Text] | str | None = None
    name: str | None = None
    arguments: str | None = None
    input: str | None = None
    call_id: str | None = None
    output: msgspec.Raw = msgspec.Raw(b"")
    action: msgspec.Raw = msgspec.Raw(b"")
    model: str | None = None
    info: TokenInfo | None = None
    message: str | None = None
    id: str | None = None


_decoder = msgspec.json.Decoder(Item)


class _Envelope(msgspec.Struct, tag_field="type", gc=False):
    """A rollout line ``{"timestamp", "type", "payload"}``. The classes below, one per ``type``,
    form a tagged union: the decoder picks each line's shape from its ``type``, in C."""


class _EventPayload(msgspec.Struct, tag_field="type", gc=False):
    """The payload of an ``event_msg`` line, by its ``type``."""


def _fields(*names: str) -> list[tuple[str, Any, Any]]:
    """The fields of :class:`Item` named (with their types and defaults)."""
    return [(f.name, f.type, f.default) for f in msgspec.structs.fields(Item) if f.name in names]


class _SessionMeta(msgspec.Struct, gc=False):
    id: str | None = None
    timestamp: str | None = None
    cli_version: str | None = None
    cwd: str | None = None


class _TurnContext(msgspec.Struct, gc=False):
    model: str | None = None
    cwd: str | None = None


class _Compacted(msgspec.Struct, gc=False):
    message: str | None = None
    timestamp: str | None = None


def _shape(name: str, base: type, tag: str, fields: list[Any]) -> type:
    return msgspec.defstruct(f"_{name}", fields, bases=(base,), tag=tag, gc=False)


def _envelope(name: str, payload: Any) -> type:
    return _shape(name, _Envelope, name, [*_fields("timestamp"), ("payload", payload, None)])


_TokenCount = _shape("TokenCount", _EventPayload, "token_count", _fields("info"))
_ErrorMsg = _shape("ErrorMsg", _EventPayload, "error", _fields("message"))
_UserMsg = _shape("UserMsg", _EventPayload, "user_message", _fields("message"))
_UI = {_shape(f"UI_{name}", _EventPayload, name, []): name for name in sorted(UI_EVENTS)}
"""UI events declare no field: whatever they hold is skipped, never built (they were ignored
before too, when their payload did not fit :class:`Item`: see :func:`_unused`)."""
_EVENT_KIND: dict[type, str] = {
    _TokenCount: "token_count",
    _ErrorMsg: "error",
    _UserMsg: "user_message",
    **_UI,
}
_EVENT_PAYLOAD = Union[tuple(_EVENT_KIND)] | None  # type: ignore[valid-type]  # noqa: UP007
_OUTER: dict[type, str] = {
    _envelope("session_meta", _SessionMeta | None): "session_meta",
    _envelope("turn_context", _TurnContext | None): "turn_context",
    _envelope("compacted", _Compacted | None): "compacted",
    _envelope("response_item", Item | None): "response_item",
    _envelope("event_msg", _EVENT_PAYLOAD): "event_msg",
    **{_shape(name, _Envelope, name, []): "quiet" for name in sorted(QUIET_ENVELOPES)},
}
"""The record classes and what each is. Each declares only the fields the audit reads (the
decoder skips the others unchecked: a field nothing reads cannot make a record unreadable);
``quiet`` records (see :data:`QUIET_ENVELOPES`) declare none, like UI events. A response item's
payload is a whole :class:`Item`, its kinds being too many and too open to list."""
_EVENT_MSG = next(shape for shape, name in _OUTER.items() if name == "event_msg")
_RESPONSE_ITEM = next(shape for shape, name in _OUTER.items() if name == "response_item")
_QUIET = frozenset(shape for shape, name in _OUTER.items() if name == "quiet")
_UI_SHAPES = frozenset(_UI)
_records = msgspec.json.Decoder(Union[tuple(_OUTER)])  # noqa: UP007
"""The fast decoder: a line of a known record type decodes into its class; any other line is
decoded again as an :class:`Item` (``fallback`` of :func:`decode_records`), as it was before."""


class _PayloadHead(msgspec.Struct, gc=False):
    type: str = ""


class _Head(msgspec.Struct, gc=False):
    type: str = ""
    payload: _PayloadHead | None = None


_head = msgspec.json.Decoder(_Head)
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def _unused(line: Line) -> bool:
    """A record that does not fit :class:`Item` is not corrupt when it is one we ignore anyway:
    a UI event (they echo response items) or a newer bookkeeping record."""
    try:
        head = _head.decode(line)
    except DECODE_ERRORS:
        return False
    if head.type == "event_msg":
        return head.payload is not None and head.payload.type in UI_EVENTS
    return head.type in QUIET_ENVELOPES


class _EarlierModel(str):
    """The type of :data:`EARLIER_MODEL`: no string read from a rollout is one."""


EARLIER_MODEL = _EarlierModel("")
"""The model of a range's events before its first ``turn_context``: whatever the lines before the
range set, known only once they are read. Compared by identity."""


class RangeCarry(msgspec.Struct, gc=False):
    """What a range of lines leaves to settle: which of its events (positions) take the model in
    force where it starts, and the model in force where it ends, when it sets one."""

    inherit: list[int]
    model_set: bool = False
    model: str | None = None


class CodexReader:
    """Lines are decoded a block at a time (:func:`decode_records`) into a tagged union of the
    record types (:data:`_OUTER`): the decoder picks each line's class from its ``type``, in C.
    Records the audit reads declare only the fields it reads; the others, such as
    ``base_instructions`` or ``encrypted_content``, are skipped by the decoder, never built as
    Python objects (nor type-checked), and the records it ignores (UI events, ``world_state``, usage records)
    declare none, so nothing of them is built. A line of a type the union does not know (an
    older rollout, a new event) is decoded again as an :class:`Item` and read as before. In a
    rollout most lines are records the audit uses, so recognizing the others from their first
    bytes (as the Claude Code reader does) would cost more per line than it saves."""

    name = "codex"
    carry_type = RangeCarry

    def events(self, path: Path, state: ReadState) -> Iterator[Event]:
        rollout = Rollout()
        records = decode_records(path, _records, state, _unused, _decoder)
        return rollout.settle(rollout.read(records, path.name, state))

    def read_range(
        self, path: Path, state: ReadState, start: int, end: int | None
    ) -> tuple[list[Event], RangeCarry]:
        """The events of the lines between two line starts, unsettled (see :class:`Rollout`),
        read without knowing the lines before: what the caller settles in file order."""
        rollout = Rollout(model=EARLIER_MODEL)
        records = decode_records(path, _records, state, _unused, _decoder, start, end)
        events = list(rollout.read(records, path.name, state))
        inherit = []
        for position, event in enumerate(events):
            if event.model is EARLIER_MODEL:
                event.model = None
                inherit.append(position)
        model = rollout.model
        if model is EARLIER_MODEL:
            return events, RangeCarry(inherit=inherit)
        return events, RangeCarry(inherit=inherit, model_set=True, model=model)

    def settler(self) -> Rollout:
        return Rollout()

    def companions(self, path: Path, state: ReadState) -> Iterator[Event]:
        return iter(())


class Rollout:
    """What a rollout's lines leave to the lines after them: the model the last ``turn_context``
    named, and the cumulative token totals of the last ``token_count`` that grew.

    :meth:`read` turns lines into events; a ``token_count`` becomes a token-usage event holding the
    totals as read. :meth:`settle`, run on the events in file order, turns those into the usage
    since the last count that grew, and drops the counts that did not grow (repeats). Reading
    needs nothing but the model, so ranges of a file can be read apart (by other processes) and
    settled in order (:meth:`settle_range`) to the same events as reading the whole file."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.total = (0, 0, 0, 0)
        """The totals of the last count that grew, in the file so far (settled)."""
        self.read_total = (0, 0, 0, 0)
        """The largest totals :meth:`read` has read: a count not above them cannot grow the
        settled totals either (they are at least as large), so it is dropped at once."""
        self.prompts = PromptEchoes()
        """Pairs the two records of each prompt; in :meth:`settle`, which sees the whole file in
        order, so that reading a file in segments counts the same prompts."""

    def settle(self, events: Iterable[Event]) -> Iterator[Event]:
        usage, user = Kinds.TOKEN_USAGE, Kinds.USER
        for event in events:
            if event.kind is user:
                echo = event.tool == ECHO  # equal, not identical: events cross processes
                event.tool = None
                if not self.prompts.first("event" if echo else "item", event.text or ""):
                    continue
            elif event.kind is usage:
                total = (
                    event.input_tokens,
                    event.cache_read_tokens,
                    event.output_tokens,
                    event.reasoning_tokens,
                )
                last = self.total
                if not total > last:
                    continue
                self.total = total
                inputs, cached, outputs, reasoning = (
                    max(0, a - b) for a, b in zip(total, last, strict=True)
                )
                event.input_tokens = inputs - cached
                event.cache_read_tokens = cached
                event.output_tokens = outputs
                event.reasoning_tokens = reasoning
            yield event

    def settle_range(self, events: list[Event], carry: RangeCarry) -> Iterator[Event]:
        """:meth:`settle` for the events of :meth:`CodexReader.read_range`, the next range."""
        for position in carry.inherit:
            events[position].model = self.model
        if carry.model_set:
            self.model = carry.model
        return self.settle(events)

    def read(
        self,
        blocks: Iterable[tuple[Block, Iterable[int], list[Any]]],
        source: str,
        state: ReadState,
    ) -> Iterator[Event]:
        checked: set[str] = set()
        outers, event_kinds = _OUTER, _EVENT_KIND
        event_msg, response_item, quiet, ui = _EVENT_MSG, _RESPONSE_ITEM, _QUIET, _UI_SHAPES
        item_events = self._item
        for block, numbers, records in blocks:
            skipped = 0
            for number, rec in zip(numbers, records, strict=True):
                # by class, the most common records first: UI events, response items and
                # bookkeeping records are most lines of a rollout
                shape = type(rec)
                if shape is event_msg:
                    item = rec.payload
                    if item is None:
                        continue
                    if type(item) in ui:
                        skipped += 1
                        continue
                    outer, kind = "event_msg", event_kinds[type(item)]
                elif shape is response_item:
                    item = rec.payload
                    if item is None:
                        continue
                    outer, kind = "response_item", item.type
                elif shape in quiet:
                    skipped += 1
                    continue
                elif shape is Item:  # a line the union did not take, read as before
                    outer = rec.type
                    if outer in ENVELOPE_TYPES:
                        item = rec.payload
                        if item is None:
                            continue
                    elif outer in QUIET_ENVELOPES:
                        skipped += 1
                        continue
                    else:  # an older rollout: the item itself, without the envelope
                        item = rec
                        outer = "response_item" if outer else "session_meta"
                    kind = item.type
                else:  # session_meta, turn_context, compacted: their payloads have no type
                    item = rec.payload
                    if item is None:
                        continue
                    outer = kind = outers[shape]
                if outer == "response_item":
                    if kind not in checked:
                        checked.add(kind)
                        state.check_fields(f"codex:{kind}", block.line(number), ITEM_KEYS)
                    yield from item_events(item, source, number, rec.timestamp, state)
                elif outer == "event_msg":
                    if kind in UI_EVENTS:
                        skipped += 1
                    elif kind == "token_count":
                        usage = item.info.total_token_usage if item.info is not None else None
                        if usage is None:
                            continue
                        total = _totals(usage)
                        if total > self.read_total:
                            self.read_total = total
                            yield Event(
                                kind=Kinds.TOKEN_USAGE,
                                source=source,
                                line=number,
                                ts=parse_timestamp(rec.timestamp),
                                model=self.model,
                                input_tokens=total[0],
                                cache_read_tokens=total[1],
                                output_tokens=total[2],
                                reasoning_tokens=total[3],
                            )
                    elif kind == "user_message":
                        text = item.message or ""
                        prompt = _prompt(source, number, parse_timestamp(rec.timestamp), text)
                        prompt.tool = ECHO  # until :meth:`settle` pairs it
                        yield prompt
                    elif kind == "error":
                        yield Event(
                            kind=Kinds.ERROR,
                            source=source,
                            line=number,
                            ts=parse_timestamp(rec.timestamp),
                            text=clip(item.message),
                        )
                    else:
                        state.unknown_type(f"codex:event_msg:{kind}")
                elif outer == "turn_context":
                    self.model = item.model or self.model
                    state.fact("cwds", getattr(item, "cwd", None))
                elif outer == "session_meta":
                    state.fact("session_ids", item.id)
                    state.fact("cli_versions", getattr(item, "cli_version", None))
                    state.fact("cwds", getattr(item, "cwd", None))
                    yield Event(
                        kind=Kinds.SESSION_START,
                        source=source,
                        line=number,
                        ts=parse_timestamp(rec.timestamp or item.timestamp),
                        text=item.id,
                    )
                else:  # compacted
                    yield Event(
                        kind=Kinds.COMPACTION,
                        source=source,
                        line=number,
                        ts=parse_timestamp(rec.timestamp or item.timestamp),
                        text=clip(item.message),
                    )
            state.skipped_lines += skipped

    def _item(
        self,
        item: Item,
        source: str,
        number: int,
        timestamp: str | None,
        state: ReadState,
    ) -> Iterable[Event]:
        """The events of one response item (a list or a generator: both are iterated once)."""
        kind = item.type
        if kind == "message":
            role = item.role
            if role != "assistant" and role != "user":
                return ()  # developer and system messages hold the CLI's own instructions
            text = "\n".join([t.text for t in item.content or () if t.text])
            if role == "user":
                if _is_injected(text):
                    return ()
                return [_prompt(source, number, parse_timestamp(timestamp or item.timestamp), text)]
            return [
                Event(
                    kind=Kinds.ASSISTANT,
                    source=source,
                    line=number,
                    ts=parse_timestamp(timestamp or item.timestamp),
                    text=clip(text),
                    text_size=len(text),
                    model=self.model,
                )
            ]
        ts = parse_timestamp(timestamp or item.timestamp)
        if kind in RESULT_ITEMS:
            return [_result(item, source, number, ts)]
        call = Event(
            kind=Kinds.TOOL_CALL,
            source=source,
            line=number,
            ts=ts,
            call_id=item.call_id,
            model=self.model,
        )
        if kind == "function_call" and item.name:
            return tool_call_events(call, item.name, _json(item.arguments))
        if kind == "custom_tool_call" and item.name:
            return tool_call_events(call, item.name, {"input": item.input or ""})
        if kind == "local_shell_call":
            return tool_call_events(call, "local_shell", _json(bytes(item.action)))
        if kind == "web_search_call":
            return [replace(call, tool="web_search", model=None)]
        if kind == "reasoning":
            summary = item.summary if isinstance(item.summary, list) else ()
            text = "\n".join([t.text for t in summary if t.text])
            return [
                replace(
                    call,
                    kind=Kinds.THINKING,
                    call_id=None,
                    model=None,
                    text=clip(text),
                    text_size=len(text),
                )
            ]
        if kind not in ("ghost_snapshot", "compaction_summary"):
            state.unknown_type(f"codex:{kind}")
        return ()


ECHO = "codex:user_message"
"""Marks a prompt read from an ``event_msg`` between :meth:`Rollout.read` and :meth:`Rollout.settle`."""


class PromptEchoes:
    """A Codex prompt is written twice, as a user ``response_item`` message and as an ``event_msg``
    ``user_message``; some rollouts have only one of the two. Each prompt is counted once: a text
    is new unless it is the echo of a recent, unmatched text from the other record type."""

    WINDOW = 8

    def __init__(self) -> None:
        self.unmatched: dict[str, deque[str]] = {
            "item": deque(maxlen=self.WINDOW),
            "event": deque(maxlen=self.WINDOW),
        }

    def first(self, source: str, text: str) -> bool:
        """True when ``text``, read from ``source`` (``item`` or ``event``), is a new prompt."""
        key = text.strip()
        other = self.unmatched["event" if source == "item" else "item"]
        if key in other:
            other.remove(key)
            return False
        self.unmatched[source].append(key)
        return True


def _prompt(source: str, number: int, ts: float | None, text: str) -> Event:
    return Event(
        kind=Kinds.USER,
        source=source,
        line=number,
        ts=ts,
        text=clip(text),
        text_size=len(text),
        user_kind=UserKind.PROMPT,
    )


def _totals(u: Usage) -> tuple[int, int, int, int]:
    return (
        u.input_tokens or 0,
        u.cached_input_tokens or 0,
        u.output_tokens or 0,
        u.reasoning_output_tokens or 0,
    )


def _json(text: str | bytes | None) -> Any:
    if not text:
        return {}
    try:
        return _any.decode(text)
    except DECODE_ERRORS:
        return {"input": text} if isinstance(text, str) else {}


def _is_injected(text: str) -> bool:
    """Codex puts AGENTS.md and the environment into user-role messages; they are not prompts."""
    head = text.lstrip()[:40]
    return head.startswith(("<environment_context>", "<user_instructions>", "# AGENTS.md"))


def _result(item: Item, source: str, number: int, ts: float | None) -> Event:
    """Tool output: a plain string, or a JSON string ``{"output", "metadata": {"exit_code"}}``."""
    raw = item.output
    exit_code: int | None = None
    start = bytes(memoryview(raw)[:4096])  # big outputs are measured, never copied whole
    head = start.replace(b'\\"', b'"')
    at = head.find(b"xit")  # in each phrase EXIT_CODE knows: a cheap test before the regex
    match = EXIT_CODE.search(head, max(at - 1, 0)) if at >= 0 else None
    if match:
        exit_code = int(match.group(1))
    status = "error" if exit_code not in (None, 0) else "ok"
    text = None
    if status == "error":
        decoded = _json(bytes(raw))
        text = clip(
            decoded if isinstance(decoded, str) else start[:500].decode(errors="replace"), 500
        )
    return Event(
        kind=Kinds.TOOL_RESULT,
        source=source,
        line=number,
        ts=ts,
        call_id=item.call_id,
        status=status,
        exit_code=exit_code,
        output_size=len(raw),
        text=text,
    )
