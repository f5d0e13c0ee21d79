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

from framework.audit.events import Event, EventKind, clip, parse_timestamp
from framework.audit.readers.base import ReadState, decode_lines
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


def _wanted(line: bytes) -> bool:
    """UI events (``event_msg`` other than token counts and errors) and the newer bookkeeping records
    repeat what response items say; a decoder that reads only the two ``type`` fields skips them."""
    try:
        head = _head.decode(line)
    except msgspec.DecodeError:
        return True
    if head.type == "event_msg":
        return head.payload is None or head.payload.type not in UI_EVENTS
    return head.type not in QUIET_ENVELOPES


class CodexReader:
    name = "codex"

    def events(self, path: Path, state: ReadState) -> Iterator[Event]:
        source = path.name
        model: str | None = None
        last_total = (0, 0, 0, 0)
        for number, line, rec in decode_lines(path, _decoder, state, _wanted):
            if rec.type in QUIET_ENVELOPES:
                continue
            if rec.type in ENVELOPE_TYPES:
                item = rec.payload
                outer = rec.type
            else:
                item = rec
                outer = "response_item" if rec.type else "session_meta"
            if item is None:
                continue
            ts = parse_timestamp(rec.timestamp or item.timestamp)
            base: dict[str, Any] = {"source": source, "line": number, "ts": ts}
            kind = item.type
            if outer == "event_msg":
                if kind == "token_count" and item.info is not None and item.info.total_token_usage:
                    total = _totals(item.info.total_token_usage)
                    if total != last_total and total > last_total:
                        delta = tuple(max(0, a - b) for a, b in zip(total, last_total, strict=True))
                        last_total = total
                        yield Event(
                            kind=EventKind.TOKEN_USAGE,
                            model=model,
                            input_tokens=delta[0] - delta[1],
                            cache_read_tokens=delta[1],
                            output_tokens=delta[2],
                            reasoning_tokens=delta[3],
                            **base,
                        )
                elif kind == "error":
                    yield Event(kind=EventKind.ERROR, text=clip(item.message), **base)
                elif kind not in UI_EVENTS:
                    state.unknown_type(f"codex:event_msg:{kind}")
                continue
            if outer == "session_meta":
                yield Event(kind=EventKind.SESSION_START, text=item.id, **base)
                continue
            if outer == "turn_context":
                model = item.model or model
                continue
            if outer == "compacted":
                yield Event(kind=EventKind.COMPACTION, text=clip(item.message), **base)
                continue
            state.check_fields(f"codex:{kind}", line, ITEM_KEYS)
            yield from self._item(item, base, model, state)

    def _item(
        self, item: Item, base: dict[str, Any], model: str | None, state: ReadState
    ) -> Iterator[Event]:
        kind = item.type
        if kind == "message":
            text = "\n".join(t.text for t in item.content or () if t.text)
            if item.role == "assistant":
                yield Event(
                    kind=EventKind.ASSISTANT,
                    text=clip(text),
                    text_size=len(text),
                    model=model,
                    **base,
                )
            elif item.role == "user" and not _is_injected(text):
                yield Event(kind=EventKind.USER, text=clip(text), text_size=len(text), **base)
        elif kind == "reasoning":
            summary = item.summary if isinstance(item.summary, list) else ()
            text = "\n".join(t.text for t in summary if t.text)
            yield Event(kind=EventKind.THINKING, text=clip(text), text_size=len(text), **base)
        elif kind == "function_call" and item.name:
            args = _json(item.arguments)
            yield from tool_call_events(
                {**base, "call_id": item.call_id, "model": model}, item.name, args
            )
        elif kind == "custom_tool_call" and item.name:
            yield from tool_call_events(
                {**base, "call_id": item.call_id, "model": model},
                item.name,
                {"input": item.input or ""},
            )
        elif kind == "local_shell_call":
            action = _json(bytes(item.action))
            yield from tool_call_events(
                {**base, "call_id": item.call_id, "model": model}, "local_shell", action
            )
        elif kind == "web_search_call":
            yield Event(kind=EventKind.TOOL_CALL, tool="web_search", call_id=item.call_id, **base)
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


def _result(item: Item, base: dict[str, Any]) -> Event:
    """Tool output: a plain string, or a JSON string ``{"output", "metadata": {"exit_code"}}``."""
    raw = bytes(item.output)
    exit_code: int | None = None
    head = raw[:4096].replace(b'\\"', b'"')
    match = EXIT_CODE.search(head)
    if match:
        exit_code = int(match.group(1))
    status = "error" if exit_code not in (None, 0) else "ok"
    text = None
    if status == "error":
        decoded = _json(raw)
        text = clip(
            decoded if isinstance(decoded, str) else raw[:500].decode(errors="replace"), 500
        )
    return Event(
        kind=EventKind.TOOL_RESULT,
        call_id=item.call_id,
        status=status,
        exit_code=exit_code,
        output_size=len(raw),
        text=text,
        **base,
    )
