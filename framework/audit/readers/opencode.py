"""OpenCode sessions: the SQLite database ``opencode.db`` (tables ``session``, ``message``, ``part``
with a JSON ``data`` column) or the older JSON storage tree ``storage/{session,message,part}/``.

A message's ``data`` holds role, ``modelID``, ``time`` (ms) and, for assistant messages, ``tokens``
(``input``, ``output``, ``reasoning``, ``cache.read``, ``cache.write``). Parts are ``text``,
``reasoning``, ``tool`` (``tool``, ``callID``, ``state`` with ``status``, ``input``, ``output``,
``metadata``), ``step-start``/``step-finish``, ``patch`` and ``file``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from framework.audit.events import Event, EventKind, UserKind, clip, parse_timestamp
from framework.audit.readers.base import ReadState, count, list_or_empty, text_or_none
from framework.audit.readers.tools import tool_call_events

QUIET_PARTS = frozenset(
    {"step-start", "step-finish", "snapshot", "file", "agent", "subtask", "retry"}
)


DATABASE_QUERY = """
SELECT m.id, m.session_id, m.data, p.data
FROM message AS m LEFT JOIN part AS p ON p.message_id = m.id
ORDER BY m.session_id, m.time_created, m.id, p.time_created, p.id
"""


class OpenCodeReader:
    name = "opencode"

    def events(self, path: Path, state: ReadState) -> Iterator[Event]:
        if path.is_file():
            yield from self._database(path, state)
        else:
            yield from self._storage(path, state)

    def _database(self, path: Path, state: ReadState) -> Iterator[Event]:
        state.files.append(str(path))
        state.bytes_read += path.stat().st_size
        uri = f"file:{path}?mode=ro"
        # a damaged or hostile database raises sqlite3.DatabaseError mid-query: what was read
        # stays in the report, the rest is reported unreadable (by the caller)
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            db.text_factory = _lenient_text
            _session_facts(db, state)
            # One query, each message's parts in consecutive rows: a query per message would scan
            # the part table each time wherever ``part.message_id`` has no index.
            rows = db.execute(DATABASE_QUERY)
            current: tuple[str, str, str] | None = None
            parts: list[dict[str, Any]] = []
            for message_id, session_id, data, part in rows:
                if current is None or current[0] != message_id:
                    if current is not None:
                        yield from self._message(
                            current[1],
                            current[0],
                            _load(current[2], state, current[0]),
                            parts,
                            state,
                        )
                    current, parts = (message_id, session_id, data), []
                if part is not None:
                    parts.append(_load(part, state, message_id))
            if current is not None:
                yield from self._message(
                    current[1], current[0], _load(current[2], state, current[0]), parts, state
                )

    def _storage(self, root: Path, state: ReadState) -> Iterator[Event]:
        storage = root / "storage" if (root / "storage").is_dir() else root
        for session_file in sorted((storage / "session").glob("*/*.json")):
            info = _load(_read(session_file, state), state, session_file.name)
            state.fact("session_ids", info.get("id"))
            state.fact("cli_versions", info.get("version"))
            state.fact("cwds", info.get("directory"))
        for session_dir in sorted((storage / "message").iterdir()):
            for message_file in sorted(session_dir.glob("*.json")):
                state.files.append(str(message_file))
                info = _load(_read(message_file, state), state, message_file.name)
                part_dir = storage / "part" / message_file.stem
                parts = [
                    _load(_read(p, state), state, p.name) for p in sorted(part_dir.glob("*.json"))
                ]
                yield from self._message(session_dir.name, message_file.stem, info, parts, state)

    def _message(
        self,
        session: str,
        message_id: str,
        info: dict[str, Any],
        parts: list[dict[str, Any]],
        state: ReadState,
    ) -> Iterator[Event]:
        if not info:
            return
        state.records += 1 + len(parts)
        time = _obj(info.get("time"))
        base: dict[str, Any] = {
            "source": session,
            "line": 0,
            "ts": parse_timestamp(time.get("created")),
        }
        model = info.get("modelID") if isinstance(info.get("modelID"), str) else None
        role = info.get("role")
        tokens = info.get("tokens")
        if role == "assistant" and isinstance(tokens, dict):
            cache = _obj(tokens.get("cache"))
            yield Event(
                kind=EventKind.TOKEN_USAGE,
                model=model,
                message_id=message_id,
                input_tokens=count(tokens.get("input")),
                output_tokens=count(tokens.get("output")),
                reasoning_tokens=count(tokens.get("reasoning")),
                cache_read_tokens=count(cache.get("read")),
                cache_write_tokens=count(cache.get("write")),
                **base,
            )
        if isinstance(info.get("error"), dict):
            yield Event(kind=EventKind.ERROR, text=clip(json.dumps(info["error"])), **base)
        for part in parts:
            ptype = part.get("type")
            text = part["text"] if isinstance(part.get("text"), str) else ""
            if ptype == "text":
                if part.get("synthetic"):
                    continue
                if role == "user":
                    yield Event(
                        kind=EventKind.USER,
                        text=clip(text),
                        text_size=len(text),
                        user_kind=UserKind.PROMPT,
                        **base,
                    )
                else:
                    yield Event(
                        kind=EventKind.ASSISTANT,
                        text=clip(text),
                        text_size=len(text),
                        model=model,
                        **base,
                    )
            elif ptype == "reasoning":
                yield Event(kind=EventKind.THINKING, text=clip(text), text_size=len(text), **base)
            elif ptype == "tool" and isinstance(part.get("tool"), str):
                yield from self._tool(part, base, model)
            elif ptype == "patch":
                for file in list_or_empty(part.get("files")):
                    if isinstance(file, str):
                        yield Event(
                            kind=EventKind.FILE_EDIT, tool="patch", path=file, op="edit", **base
                        )
            elif ptype not in QUIET_PARTS:
                state.unknown_type(f"opencode:part:{ptype}")

    def _tool(
        self, part: dict[str, Any], base: dict[str, Any], model: str | None
    ) -> Iterator[Event]:
        tool_state = _obj(part.get("state"))
        times = _obj(tool_state.get("time"))
        call_base = {**base, "call_id": text_or_none(part.get("callID")), "model": model}
        call_base["ts"] = parse_timestamp(times.get("start")) or base["ts"]
        yield from tool_call_events(
            Event(kind=EventKind.TOOL_CALL, **call_base),
            part["tool"],
            tool_state.get("input") or {},
        )
        status = tool_state.get("status")
        if status in ("completed", "error"):
            metadata = _obj(tool_state.get("metadata"))
            exit_code = metadata.get("exit") if isinstance(metadata.get("exit"), int) else None
            output = tool_state.get("output") or tool_state.get("error") or ""
            output = output if isinstance(output, str) else json.dumps(output)
            failed = status == "error" or exit_code not in (None, 0)
            yield Event(
                kind=EventKind.TOOL_RESULT,
                call_id=text_or_none(part.get("callID")),
                status="error" if failed else "ok",
                exit_code=exit_code,
                output_size=len(output),
                text=clip(output, 500) if failed else None,
                **{**base, "ts": parse_timestamp(times.get("end")) or call_base["ts"]},
            )


def _lenient_text(data: bytes) -> str:
    """Text columns as text even when their bytes are not UTF-8 (sqlite3's default raises)."""
    return data.decode("utf-8", errors="replace")


def _session_facts(db: sqlite3.Connection, state: ReadState) -> None:
    """Session ids, OpenCode versions and directories from the ``session`` table, when it has them."""
    try:
        rows = db.execute("SELECT id, version, directory FROM session ORDER BY time_created")
        for session_id, version, directory in rows:
            state.fact("session_ids", session_id)
            state.fact("cli_versions", version)
            state.fact("cwds", directory)
    except sqlite3.OperationalError:  # an older schema without these columns or the table
        return


def _load(data: str | bytes, state: ReadState, where: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, TypeError, RecursionError) as exc:  # not JSON, not UTF-8, not text
        state.corrupt(where, 0, str(exc))
        return {}
    if not isinstance(value, dict):
        state.corrupt(where, 0, "not a JSON object")
        return {}
    return value


def _read(path: Path, state: ReadState) -> bytes:
    data = path.read_bytes()
    state.bytes_read += len(data)
    return data


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
