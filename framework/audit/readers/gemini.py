"""Gemini CLI chat recordings: ``~/.gemini/tmp/<project_hash>/chats/session-<time>-<id>.{jsonl,json}``.

The current ``.jsonl`` form is an upsert log: a metadata line, then message records (a message id is
rewritten in full whenever its tool calls, results or tokens change, last one wins),
``{"$set": {...}}`` patches (``messages`` in a patch replaces the list) and ``{"$rewindTo": id}``,
which drops that message and everything after it. The legacy ``.json`` form is one object with a
``messages`` list. Either way the session is folded first and then emitted, so this reader holds
one session's messages in memory (Gemini sessions are small next to the streamed formats).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from framework.audit.events import Event, EventKind, UserKind, clip, parse_timestamp
from framework.audit.readers.base import ReadState, count, decode_lines, list_or_empty, text_or_none
from framework.audit.readers.tools import tool_call_events

MESSAGE_KEYS = frozenset(
    {
        "id",
        "timestamp",
        "type",
        "content",
        "toolCalls",
        "thoughts",
        "tokens",
        "model",
        "displayContent",
    }
)
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class GeminiReader:
    name = "gemini"

    def events(self, path: Path, state: ReadState) -> Iterator[Event]:
        messages = (
            self._fold_jsonl(path, state) if path.suffix == ".jsonl" else self._legacy(path, state)
        )
        source = path.name
        for message in messages:
            yield from self._message(message, source, state)

    def _fold_jsonl(self, path: Path, state: ReadState) -> list[dict[str, Any]]:
        folded: dict[str, dict[str, Any]] = {}
        for number, _line, rec in decode_lines(path, _any, state):
            if not isinstance(rec, dict):
                state.corrupt(path.name, number, "not a JSON object")
                continue
            if "$rewindTo" in rec:
                ids = list(folded)
                target = rec["$rewindTo"]
                known = isinstance(target, str) and target in folded
                for key in ids[ids.index(target) :] if known else ids:
                    del folded[key]
            elif "$set" in rec:
                patch = rec["$set"]
                if isinstance(patch, dict) and isinstance(patch.get("messages"), list):
                    folded = {}
                    self._add_all(folded, patch["messages"], number)
            elif isinstance(rec.get("id"), str) and "type" in rec:
                rec["_line"] = number
                folded[rec["id"]] = rec
            elif "sessionId" in rec:
                state.fact("session_ids", rec.get("sessionId"))
                messages = rec.get("messages")
                self._add_all(folded, messages if isinstance(messages, list) else [], number)
            else:
                state.unknown_type("gemini:record")
        return list(folded.values())

    @staticmethod
    def _add_all(folded: dict[str, dict[str, Any]], messages: list[Any], number: int) -> None:
        for msg in messages:
            if isinstance(msg, dict) and isinstance(msg.get("id"), str):
                msg["_line"] = number
                folded[msg["id"]] = msg

    def _legacy(self, path: Path, state: ReadState) -> list[dict[str, Any]]:
        state.files.append(str(path))
        raw = path.read_bytes()
        state.bytes_read += len(raw)
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            state.corrupt(path.name, 1, f"not a JSON document: {exc}")
            return []
        messages = doc.get("messages") if isinstance(doc, dict) else None
        if isinstance(doc, dict):
            state.fact("session_ids", doc.get("sessionId"))
        if not isinstance(messages, list):
            state.corrupt(path.name, 1, "no 'messages' list")
            return []
        state.records += len(messages)
        return [m for m in messages if isinstance(m, dict)]

    def _message(self, msg: dict[str, Any], source: str, state: ReadState) -> Iterator[Event]:
        base: dict[str, Any] = {
            "source": source,
            "line": msg["_line"] if type(msg.get("_line")) is int else 0,
            "ts": parse_timestamp(msg.get("timestamp")),
        }
        kind = msg.get("type")
        model = msg.get("model") if isinstance(msg.get("model"), str) else None
        text = _text(msg.get("content"))
        if kind == "user":
            if not text and _only_function_responses(msg.get("content")):
                # Gemini CLI records tool results as a user message too; they were emitted
                # already from the call's own ``result``.
                return
            yield Event(
                kind=EventKind.USER,
                text=clip(text),
                text_size=len(text),
                user_kind=UserKind.PROMPT,
                **base,
            )
            return
        if kind in ("error", "warning"):
            yield Event(kind=EventKind.ERROR, text=clip(text), **base)
            return
        if kind == "info":
            return
        if kind != "gemini":
            state.unknown_type(f"gemini:{kind}")
            return
        state.check_fields(
            "gemini:message",
            msgspec.json.encode({k: None for k in msg if k != "_line"}),
            MESSAGE_KEYS,
        )
        tokens = msg.get("tokens")
        if isinstance(tokens, dict):
            cached = count(tokens.get("cached"))
            yield Event(
                kind=EventKind.TOKEN_USAGE,
                model=model,
                message_id=text_or_none(msg.get("id")),
                input_tokens=max(0, count(tokens.get("input")) - cached),
                cache_read_tokens=cached,
                output_tokens=count(tokens.get("output")),
                reasoning_tokens=count(tokens.get("thoughts")),
                **base,
            )
        for thought in list_or_empty(msg.get("thoughts")):
            if isinstance(thought, dict):
                t = f"{thought.get('subject', '')}: {thought.get('description', '')}"
                yield Event(kind=EventKind.THINKING, text=clip(t), text_size=len(t), **base)
        if text:
            yield Event(
                kind=EventKind.ASSISTANT, text=clip(text), text_size=len(text), model=model, **base
            )
        for call in list_or_empty(msg.get("toolCalls")):
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                continue
            call_base = {**base, "call_id": text_or_none(call.get("id")), "model": model}
            call_base["ts"] = parse_timestamp(call.get("timestamp")) or base["ts"]
            yield from tool_call_events(
                Event(kind=EventKind.TOOL_CALL, **call_base), call["name"], call.get("args")
            )
            status = call.get("status")
            if status in ("success", "error", "cancelled"):
                output = json.dumps(call.get("result"))
                exit_code = _exit_code(output)
                failed = status == "error" or exit_code not in (None, 0)
                yield Event(
                    kind=EventKind.TOOL_RESULT,
                    call_id=text_or_none(call.get("id")),
                    status="error" if failed else "ok",
                    exit_code=exit_code,
                    output_size=len(output),
                    text=clip(output, 500) if failed else None,
                    **{**base, "ts": call_base["ts"]},
                )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _only_function_responses(content: Any) -> bool:
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(p, dict) and "functionResponse" in p for p in content)
    )


def _exit_code(output: str) -> int | None:
    marker = "Exit Code: "
    at = output.find(marker)
    if at < 0:
        return None
    digits = output[at + len(marker) : at + len(marker) + 6].split("\\")[0].split()[0]
    try:
        return int(digits)
    except ValueError:
        return None
