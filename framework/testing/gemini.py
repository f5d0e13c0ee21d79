"""The Gemini API as Gemini CLI uses it: ``models/<model>:generateContent`` and
``:streamGenerateContent?alt=sse`` requests in, ``GenerateContentResponse`` JSON or SSE out.

Gemini CLI also sends tool-less requests that demand JSON of a given schema (its model router,
the next-speaker check); as side requests they get :func:`schema_stub`, the smallest value that
fits the schema, so the CLI parses it and goes on instead of retrying.
"""

from __future__ import annotations

import json
import re
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

API = "gemini"

_MODEL_IN_PATH = re.compile(r"/models/([^/:?]+):")
# Gemini CLI names its workspace in the first user message rather than the system instruction.
_WORKSPACE = re.compile(r"Workspace Directories:\**\n\s*- (/[^\n\"\\]*)")


def is_gemini_path(path: str) -> bool:
    """``path`` (without its query) is a Gemini content-generation or token-count call."""
    return path.endswith((":generateContent", ":streamGenerateContent", ":countTokens"))


def read_request(body: dict[str, Any], path: str = "") -> RequestView:
    """Read a ``generateContent`` body; ``path`` carries the model and whether to stream."""
    contents = body.get("contents")
    if not isinstance(contents, list):
        raise ScriptMismatch("Gemini API request without a 'contents' list")
    contents = [c for c in contents if isinstance(c, dict)]
    system_text = text_of(body.get("systemInstruction", ""))
    roles = ["assistant" if c.get("role") == "model" else "user" for c in contents]
    model_match = _MODEL_IN_PATH.search(path)
    return RequestView(
        model=model_match.group(1) if model_match else "",
        stream=":streamGenerateContent" in path,
        turns_done=count_assistant_runs(roles),
        tool_names=_tool_names(body.get("tools") or []),
        system_text=system_text,
        context_text=system_text + "\n" + text_of(contents),
        tool_results=_tool_results_since_last_turn(contents),
        cwd=find_cwd(body) or _workspace(contents),
    )


def _tool_names(tools: list[Any]) -> list[str]:
    return [
        str(declaration["name"])
        for tool in tools
        if isinstance(tool, dict)
        for declaration in tool.get("functionDeclarations") or []
        if isinstance(declaration, dict) and "name" in declaration
    ]


def _tool_results_since_last_turn(contents: list[dict[str, Any]]) -> list[str]:
    results: list[str] = []
    for content in reversed(contents):
        if content.get("role") == "model":
            break
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        results[:0] = [text_of(p["functionResponse"]) for p in parts if "functionResponse" in p]
    return results


def _workspace(contents: list[dict[str, Any]]) -> str | None:
    for content in contents:
        match = _WORKSPACE.search(text_of(content.get("parts", [])))
        if match:
            return match.group(1).strip()
    return None


def translate(action: Action, view: RequestView, turn: int, index: int) -> ToolCall:
    """Map a portable action onto Gemini CLI's tools (run_shell_command, write_file, ...)."""
    name: str
    arguments: dict[str, Any]
    if action.bash is not None:
        name = "run_shell_command"
        arguments = {"command": action.bash, "description": "scripted command"}
    elif action.write is not None:
        path = absolute_path(action.write.path, view, turn)
        name, arguments = "write_file", {"file_path": path, "content": action.write.content}
    elif action.edit is not None:
        name = "replace"
        arguments = {
            "file_path": absolute_path(action.edit.path, view, turn),
            "instruction": "scripted edit",
            "old_string": action.edit.old,
            "new_string": action.edit.new,
        }
    elif action.read is not None:
        name, arguments = "read_file", {"file_path": absolute_path(action.read, view, turn)}
    else:
        assert action.tool is not None
        name, arguments = action.tool.name, dict(action.tool.input)
    require_offered(name, action.kind, view, turn)
    return ToolCall(call_id=f"call_scripted_{turn + 1:03d}_{index}", name=name, input=arguments)


def schema_stub(schema: Any) -> Any:
    """The smallest value of a JSON schema (either casing of ``type``): first enum value, 0, "", ..."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "")).lower()
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: schema_stub(sub) for name, sub in properties.items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return max(0, int(schema.get("minimum", 0)))
    if kind == "boolean":
        return False
    if kind == "string":
        return ""
    return None


def side_reply(body: dict[str, Any], default: str) -> Reply:
    """A tool-less request's answer: a schema stub when the request demands JSON, else ``default``."""
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if config.get("responseMimeType") == "application/json" and schema is not None:
        return Reply(text=json.dumps(schema_stub(schema)))
    return Reply(text=default)


def _parts(reply: Reply) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if reply.text:
        parts.append({"text": reply.text})
    for call in reply.calls:
        parts.append({"functionCall": {"id": call.call_id, "name": call.name, "args": call.input}})
    return parts


def _usage(view: RequestView, reply: Reply) -> dict[str, int]:
    prompt = estimate_tokens(view.context_text)
    output = estimate_tokens(reply.text + "".join(json.dumps(c.input) for c in reply.calls))
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output,
    }


def response(reply: Reply, view: RequestView, response_id: str, model: str) -> dict[str, Any]:
    """The non-streaming ``GenerateContentResponse``."""
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": _parts(reply)},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": _usage(view, reply),
        "modelVersion": model,
        "responseId": response_id,
    }


def stream_events(
    reply: Reply, view: RequestView, response_id: str, model: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """SSE chunks, each a partial response: the text in pieces, then the calls with the finish.

    The event name is empty: the Gemini SDK reads ``data:`` lines only and stops at anything else.
    """
    usage = _usage(view, reply)
    text = reply.text
    pieces = [text[i : i + 64] for i in range(0, len(text), 64)]
    calls = [p for p in _parts(reply) if "functionCall" in p]
    # The closing chunk must carry content, so without calls it takes the last piece of text.
    leading, closing = (
        (pieces, calls) if calls else (pieces[:-1], [{"text": pieces[-1] if pieces else ""}])
    )
    for piece in leading:
        yield "", _chunk([{"text": piece}], None, usage, response_id, model)
    yield "", _chunk(closing, "STOP", usage, response_id, model)


def _chunk(
    parts: list[dict[str, Any]],
    finish: str | None,
    usage: dict[str, int],
    response_id: str,
    model: str,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id,
    }


def count_tokens_body(body: dict[str, Any]) -> dict[str, Any]:
    return {"totalTokens": estimate_tokens(text_of(body.get("contents", [])))}


def error_body(message_text: str) -> dict[str, Any]:
    return {"error": {"code": 400, "message": message_text, "status": "INVALID_ARGUMENT"}}
