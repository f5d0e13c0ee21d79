"""The Anthropic Messages API as Claude Code uses it: requests in, JSON or SSE events out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from framework.testing.protocol import (
    Reply,
    RequestView,
    ScriptMismatch,
    ToolCall,
    absolute_path,
    count_assistant_runs,
    estimate_tokens,
    find_cwd,
    require_offered,
    text_of,
)
from framework.testing.script import Action

API = "anthropic"


def read_request(body: dict[str, Any]) -> RequestView:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ScriptMismatch("Messages API request without a 'messages' list")
    system_parts = [text_of(body.get("system", ""))]
    system_parts += [text_of(m.get("content")) for m in messages if m.get("role") == "system"]
    system_text = "\n".join(system_parts)
    roles = [str(m.get("role", "")) for m in messages]
    return RequestView(
        model=str(body.get("model", "")),
        stream=bool(body.get("stream")),
        turns_done=count_assistant_runs(roles),
        tool_names=[str(t["name"]) for t in body.get("tools") or [] if "name" in t],
        system_text=system_text,
        context_text=system_text + "\n" + text_of(messages),
        tool_results=_tool_results_since_last_turn(messages),
        cwd=find_cwd(body),
    )


def _tool_results_since_last_turn(messages: list[dict[str, Any]]) -> list[str]:
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") == "assistant":
            break
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            blocks = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            results[:0] = [text_of(b.get("content", "")) for b in blocks]
    return results


def translate(action: Action, view: RequestView, turn: int, index: int) -> ToolCall:
    """Map a portable action onto Claude Code's tools."""
    name: str
    arguments: dict[str, Any]
    if action.bash is not None:
        name, arguments = "Bash", {"command": action.bash, "description": "scripted command"}
    elif action.write is not None:
        path = absolute_path(action.write.path, view, turn)
        name, arguments = "Write", {"file_path": path, "content": action.write.content}
    elif action.edit is not None:
        path = absolute_path(action.edit.path, view, turn)
        name = "Edit"
        arguments = {
            "file_path": path,
            "old_string": action.edit.old,
            "new_string": action.edit.new,
        }
    elif action.read is not None:
        name, arguments = "Read", {"file_path": absolute_path(action.read, view, turn)}
    else:
        assert action.tool is not None
        name, arguments = action.tool.name, dict(action.tool.input)
    require_offered(name, action.kind, view, turn)
    return ToolCall(call_id=f"toolu_scripted_{turn + 1:03d}_{index}", name=name, input=arguments)


def _content_blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    for call in reply.calls:
        blocks.append(
            {"type": "tool_use", "id": call.call_id, "name": call.name, "input": call.input}
        )
    return blocks


def _usage(view: RequestView, reply: Reply) -> dict[str, int]:
    output = reply.text + "".join(json.dumps(c.input) for c in reply.calls)
    return {
        "input_tokens": estimate_tokens(view.context_text),
        "output_tokens": estimate_tokens(output),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def message(reply: Reply, view: RequestView, message_id: str, model: str) -> dict[str, Any]:
    """The non-streaming response body."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content_blocks(reply),
        "stop_reason": "tool_use" if reply.calls else "end_turn",
        "stop_sequence": None,
        "usage": _usage(view, reply),
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def stream_events(
    reply: Reply, view: RequestView, message_id: str, model: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The SSE events of a streamed response, as (event name, data) pairs."""
    full = message(reply, view, message_id, model)
    usage = full["usage"]
    start = {**full, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(full["content"]):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"], 64)]
        else:
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            encoded = json.dumps(block["input"], ensure_ascii=False)
            size = max(1, len(encoded) // 3 + 1)
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in _pieces(encoded, size)
            ]
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": opening},
        )
        for delta in deltas:
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": full["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def error_body(message_text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message_text}}


def count_tokens_body(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_tokens": estimate_tokens(
            text_of(body.get("system", "")) + text_of(body.get("messages", []))
        )
    }
