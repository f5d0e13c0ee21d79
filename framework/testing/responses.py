"""The OpenAI Responses API as Codex uses it (``wire_api = "responses"``): requests in, JSON or SSE out."""

from __future__ import annotations

import json
import posixpath
import shlex
import time
from collections.abc import Iterator
from typing import Any

from framework.testing.protocol import (
    Reply,
    RequestView,
    ScriptMismatch,
    ToolCall,
    count_assistant_runs,
    estimate_tokens,
    find_cwd,
    text_of,
)
from framework.testing.script import Action

API = "openai-responses"

_ASSISTANT_ITEMS = {
    "function_call",
    "custom_tool_call",
    "reasoning",
    "local_shell_call",
    "web_search_call",
}
_RESULT_ITEMS = {"function_call_output", "custom_tool_call_output", "local_shell_call_output"}
# Shell tools Codex has offered across versions, newest first, with how each takes a command line.
_SHELL_TOOLS = ("exec_command", "shell_command", "shell")
FREEFORM = "__freeform__"


def _role(item: dict[str, Any]) -> str:
    kind = item.get("type", "message")
    if kind in _ASSISTANT_ITEMS:
        return "assistant"
    if kind in _RESULT_ITEMS:
        return "user"
    role = str(item.get("role", ""))
    return role if role in ("assistant", "user") else "system"


def _tool_names(tools: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for tool in tools:
        if tool.get("type") == "namespace":
            names += [str(t["name"]) for t in tool.get("tools", []) if "name" in t]
        names.append(str(tool.get("name") or tool.get("type", "")))
    return names


def read_request(body: dict[str, Any]) -> RequestView:
    raw_input = body.get("input", [])
    items: list[dict[str, Any]] = (
        [{"type": "message", "role": "user", "content": raw_input}]
        if isinstance(raw_input, str)
        else [i for i in raw_input if isinstance(i, dict)]
    )
    roles = [_role(i) for i in items]
    system_parts = [text_of(body.get("instructions", ""))]
    system_parts += [
        text_of(i.get("content")) for i, r in zip(items, roles, strict=True) if r == "system"
    ]
    system_text = "\n".join(system_parts)
    results: list[str] = []
    for item, role in zip(reversed(items), reversed(roles), strict=True):
        if role == "assistant":
            break
        if item.get("type") in _RESULT_ITEMS:
            results.insert(0, text_of(item.get("output", "")))
    return RequestView(
        model=str(body.get("model", "")),
        stream=bool(body.get("stream")),
        turns_done=count_assistant_runs(roles),
        tool_names=_tool_names(body.get("tools") or []),
        system_text=system_text,
        context_text=system_text + "\n" + text_of(items),
        tool_results=results,
        cwd=find_cwd(body),
    )


def _shell_call(
    command: str, view: RequestView, turn: int, kind: str
) -> tuple[str, dict[str, Any]]:
    for name in _SHELL_TOOLS:
        if name in view.tool_names:
            if name == "exec_command":
                return name, {"cmd": command}
            if name == "shell_command":
                return name, {"command": command}
            return name, {"command": ["bash", "-lc", command]}
    raise ScriptMismatch(
        f"turn {turn + 1}: action {kind!r} needs a shell tool ({', '.join(_SHELL_TOOLS)}), none of "
        f"which this request offers (offered: {', '.join(view.tool_names)})"
    )


def _write_command(path: str, content: str) -> str:
    directory = posixpath.dirname(path)
    write = f"printf '%s' {shlex.quote(content)} > {shlex.quote(path)}"
    return f"mkdir -p {shlex.quote(directory)} && {write}" if directory else write


def _edit_patch(path: str, old: str, new: str) -> str:
    minus = "".join(f"-{line}\n" for line in old.splitlines())
    plus = "".join(f"+{line}\n" for line in new.splitlines())
    return f"*** Begin Patch\n*** Update File: {path}\n@@\n{minus}{plus}*** End Patch\n"


def translate(action: Action, view: RequestView, turn: int, index: int) -> ToolCall:
    """Map a portable action onto Codex's tools: a shell tool, and apply_patch for edits."""
    call_id = f"call_scripted_{turn + 1:03d}_{index}"
    if action.bash is not None:
        name, arguments = _shell_call(action.bash, view, turn, "bash")
    elif action.write is not None:
        name, arguments = _shell_call(
            _write_command(action.write.path, action.write.content), view, turn, "write"
        )
    elif action.read is not None:
        name, arguments = _shell_call(f"cat {shlex.quote(action.read)}", view, turn, "read")
    elif action.edit is not None:
        if "apply_patch" not in view.tool_names:
            raise ScriptMismatch(
                f"turn {turn + 1}: action 'edit' needs Codex's apply_patch tool, which this request "
                "does not offer; use a 'bash' action (e.g. sed) or enable apply_patch in Codex"
            )
        name, arguments = (
            "apply_patch",
            {FREEFORM: _edit_patch(action.edit.path, action.edit.old, action.edit.new)},
        )
    else:
        assert action.tool is not None
        name, arguments = action.tool.name, dict(action.tool.input)
        if name not in view.tool_names:
            raise ScriptMismatch(
                f"turn {turn + 1}: the tool {name!r} is not offered by this request "
                f"(offered: {', '.join(view.tool_names)})"
            )
    return ToolCall(call_id=call_id, name=name, input=arguments)


def _items(reply: Reply, response_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if reply.text:
        items.append(
            {
                "type": "message",
                "id": f"msg_{response_id}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        )
    for call in reply.calls:
        if FREEFORM in call.input:
            items.append(
                {
                    "type": "custom_tool_call",
                    "id": f"ctc_{call.call_id}",
                    "call_id": call.call_id,
                    "name": call.name,
                    "input": call.input[FREEFORM],
                    "status": "completed",
                }
            )
        else:
            items.append(
                {
                    "type": "function_call",
                    "id": f"fc_{call.call_id}",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": json.dumps(call.input, ensure_ascii=False),
                    "status": "completed",
                }
            )
    return items


def response(reply: Reply, view: RequestView, response_id: str, model: str) -> dict[str, Any]:
    """The non-streaming response body (also the payload of ``response.completed``)."""
    items = _items(reply, response_id)
    input_tokens = estimate_tokens(view.context_text)
    output_tokens = estimate_tokens(json.dumps(items))
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": items,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _item_events(item: dict[str, Any], index: int) -> Iterator[dict[str, Any]]:
    kind = item["type"]
    if kind == "message":
        text = item["content"][0]["text"]
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "content": [], "status": "in_progress"},
        }
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        yield {"type": "response.content_part.added", **where, "part": part}
        for piece in _pieces(text, 64):
            yield {"type": "response.output_text.delta", **where, "delta": piece}
        yield {"type": "response.output_text.done", **where, "text": text}
        yield {"type": "response.content_part.done", **where, "part": item["content"][0]}
    elif kind == "function_call":
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "arguments": "", "status": "in_progress"},
        }
        where = {"item_id": item["id"], "output_index": index}
        arguments = item["arguments"]
        for piece in _pieces(arguments, max(1, len(arguments) // 3 + 1)):
            yield {"type": "response.function_call_arguments.delta", **where, "delta": piece}
        yield {"type": "response.function_call_arguments.done", **where, "arguments": arguments}
    else:
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "input": "", "status": "in_progress"},
        }
        where = {"item_id": item["id"], "output_index": index}
        yield {"type": "response.custom_tool_call_input.delta", **where, "delta": item["input"]}
        yield {"type": "response.custom_tool_call_input.done", **where, "input": item["input"]}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def stream_events(
    reply: Reply, view: RequestView, response_id: str, model: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The SSE events of a streamed response, numbered by ``sequence_number``."""
    full = response(reply, view, response_id, model)
    pending = {**full, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
    ]
    for index, item in enumerate(full["output"]):
        events.extend(_item_events(item, index))
    events.append({"type": "response.completed", "response": full})
    for number, event in enumerate(events):
        yield event["type"], {**event, "sequence_number": number}


def error_body(message_text: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message_text,
            "type": "invalid_request_error",
            "param": None,
            "code": "scripted_model_mismatch",
        }
    }
