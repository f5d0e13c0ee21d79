"""Codex rollouts: ``~/.codex/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl`` (or ``.jsonl.zst``).

Each line is ``{"timestamp", "type", "payload"}`` with ``type`` one of ``session_meta``,
``turn_context``, ``response_item`` (messages, reasoning, ``function_call`` whose ``arguments`` is a
JSON *string*, ``function_call_output``, ``custom_tool_call`` for apply_patch), ``event_msg``
(``token_count`` with cumulative usage; the rest repeat response items for the UI) and
``compacted``. Older rollouts wrote the item itself on each line, without the envelope.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from msgspec.structs import replace

from framework.audit.events import Event, EventKind, clip, parse_timestamp
from framework.audit.readers.base import Line, ReadState, decode_lines
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
        "user_message", "agent_message", "agent_reasoning", "agent_reasoning_raw_content",
        "exec_command_begin", "exec_command_end", "exec_command_output_delta", "patch_apply_begin",
        "patch_apply_end", "task_started", "task_complete", "turn_aborted", "mcp_tool_call_begin",
        "mcp_tool_call_end", "web_search_begin", "web_search_end", "turn_diff", "plan_update",
        "entered_review_mode", "exited_review_mode", "context_compacted", "item_completed",
        "agent_message_delta", "reasoning_content_delta", "stream_error", "background_event",
        "view_image_tool_call", "undo_started", "undo_completed", "get_history_entry_response",
        "thread_settings_applied", "item_started", "warning",
    }
)  # fmt: skip
EXIT_CODE = re.compile(rb"(?:Exit code|exit_code\"?|exited with code):?\s*(-?\d+)")


class Text(msgspec.Struct):
    type: str = ""
    text: str | None = None


class Usage(msgspec.Struct):
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_output_tokens: int | None = None


class TokenInfo(msgspec.Struct):
    total_token_usage: Usage | None = None


class Item(msgspec.Struct):
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


class _PayloadHead(msgspec.Struct):
    type: str = ""


class _Head(msgspec.Struct):
    type: str = ""
    payload: _PayloadHead | None = None


_head = msgspec.json.Decoder(_Head)
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def _unused(line: Line) -> bool:
    """A record that does not fit :class:`Item` is not corrupt when it is one we ignore anyway:
    a UI event (they echo response items) or a newer bookkeeping record."""
    try:
        head = _head.decode(line)
    except msgspec.DecodeError:
        return False
    if head.type == "event_msg":
        return head.payload is not None and head.payload.type in UI_EVENTS
    return head.type in QUIET_ENVELOPES


class CodexReader:
    """Every line is decoded once, straight into :class:`Item`: in a rollout most bytes belong to
    records we use, so a separate pass that only reads the ``type`` fields would cost more than the
    few UI lines it could skip."""

    name = "codex"

    def events(self, path: Path, state: ReadState) -> Iterator[Event]:
        source = path.name
        model: str | None = None
        last_total = (0, 0, 0, 0)
        checked: set[str] = set()
        for number, line, rec in decode_lines(path, _decoder, state, unused=_unused):
            outer = rec.type
            if outer in ENVELOPE_TYPES:
                item = rec.payload
                if item is None:
                    continue
            elif outer in QUIET_ENVELOPES:
                state.skipped_lines += 1
                continue
            else:  # an older rollout: the item itself, without the envelope
                item = rec
                outer = "response_item" if outer else "session_meta"
            kind = item.type
            if outer == "response_item":
                if kind not in checked:
                    checked.add(kind)
                    state.check_fields(f"codex:{kind}", line, ITEM_KEYS)
                base = Event(
                    kind=EventKind.TOOL_CALL,
                    source=source,
                    line=number,
                    ts=parse_timestamp(rec.timestamp or item.timestamp),
                )
                yield from self._item(item, base, model, state)
            elif outer == "event_msg":
                if kind == "token_count":
                    usage = item.info.total_token_usage if item.info is not None else None
                    total = _totals(usage) if usage is not None else last_total
                    if total > last_total:
                        delta = tuple(max(0, a - b) for a, b in zip(total, last_total, strict=True))
                        last_total = total
                        yield Event(
                            kind=EventKind.TOKEN_USAGE,
                            source=source,
                            line=number,
                            ts=parse_timestamp(rec.timestamp),
                            model=model,
                            input_tokens=delta[0] - delta[1],
                            cache_read_tokens=delta[1],
                            output_tokens=delta[2],
                            reasoning_tokens=delta[3],
                        )
                elif kind == "error":
                    yield Event(
                        kind=EventKind.ERROR,
                        source=source,
                        line=number,
                        ts=parse_timestamp(rec.timestamp),
                        text=clip(item.message),
                    )
                elif kind in UI_EVENTS:
                    state.skipped_lines += 1
                else:
                    state.unknown_type(f"codex:event_msg:{kind}")
            elif outer == "turn_context":
                model = item.model or model
            elif outer == "session_meta":
                yield Event(
                    kind=EventKind.SESSION_START,
                    source=source,
                    line=number,
                    ts=parse_timestamp(rec.timestamp or item.timestamp),
                    text=item.id,
                )
            else:  # compacted
                yield Event(
                    kind=EventKind.COMPACTION,
                    source=source,
                    line=number,
                    ts=parse_timestamp(rec.timestamp or item.timestamp),
                    text=clip(item.message),
                )

    def _item(
        self, item: Item, base: Event, model: str | None, state: ReadState
    ) -> Iterator[Event]:
        kind = item.type
        if kind == "message":
            text = "\n".join(t.text for t in item.content or () if t.text)
            if item.role == "assistant":
                yield replace(
                    base,
                    kind=EventKind.ASSISTANT,
                    text=clip(text),
                    text_size=len(text),
                    model=model,
                )
            elif item.role == "user" and not _is_injected(text):
                yield replace(base, kind=EventKind.USER, text=clip(text), text_size=len(text))
        elif kind == "reasoning":
            summary = item.summary if isinstance(item.summary, list) else ()
            text = "\n".join(t.text for t in summary if t.text)
            yield replace(base, kind=EventKind.THINKING, text=clip(text), text_size=len(text))
        elif kind == "function_call" and item.name:
            args = _json(item.arguments)
            yield from tool_call_events(
                replace(base, call_id=item.call_id, model=model), item.name, args
            )
        elif kind == "custom_tool_call" and item.name:
            yield from tool_call_events(
                replace(base, call_id=item.call_id, model=model),
                item.name,
                {"input": item.input or ""},
            )
        elif kind == "local_shell_call":
            action = _json(bytes(item.action))
            yield from tool_call_events(
                replace(base, call_id=item.call_id, model=model), "local_shell", action
            )
        elif kind == "web_search_call":
            yield replace(base, kind=EventKind.TOOL_CALL, tool="web_search", call_id=item.call_id)
        elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            yield _result(item, base)
        elif kind in ("ghost_snapshot", "compaction_summary"):
            return
        else:
            state.unknown_type(f"codex:{kind}")


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
    except msgspec.DecodeError:
        return {"input": text} if isinstance(text, str) else {}


def _is_injected(text: str) -> bool:
    """Codex puts AGENTS.md and the environment into user-role messages; they are not prompts."""
    head = text.lstrip()[:40]
    return head.startswith(("<environment_context>", "<user_instructions>", "# AGENTS.md"))


def _result(item: Item, base: Event) -> Event:
    """Tool output: a plain string, or a JSON string ``{"output", "metadata": {"exit_code"}}``."""
    raw = item.output
    exit_code: int | None = None
    start = bytes(memoryview(raw)[:4096])  # big outputs are measured, never copied whole
    head = start.replace(b'\\"', b'"')
    match = EXIT_CODE.search(head)
    if match:
        exit_code = int(match.group(1))
    status = "error" if exit_code not in (None, 0) else "ok"
    text = None
    if status == "error":
        decoded = _json(bytes(raw))
        text = clip(
            decoded if isinstance(decoded, str) else start[:500].decode(errors="replace"), 500
        )
    return replace(
        base,
        kind=EventKind.TOOL_RESULT,
        call_id=item.call_id,
        status=status,
        exit_code=exit_code,
        output_size=len(raw),
        text=text,
    )
