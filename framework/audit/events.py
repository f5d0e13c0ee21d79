"""The common event model every reader produces.

Two shapes of one model: :class:`Event` is a msgspec Struct that readers create for every record
(cheap, so a gigabyte of transcript streams at hundreds of MB/s), and :class:`EventRecord` is its
pydantic twin, built only for the events a report shows (findings, timeline). Both carry the same
fields; :meth:`EventRecord.of` converts. Events, like the Structs readers decode records into, are
not tracked by the garbage collector (``gc=False``): they hold only strings, numbers and lists of
those, so they cannot form a reference cycle, and a long session creates millions of them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec
from pydantic import BaseModel, ConfigDict

TEXT_LIMIT = 2000
"""Characters of message text, thinking, output or patch an event keeps (the rest is counted, not kept)."""


class EventKind(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    THINKING = "thinking"
    TOOL_CALL = "tool_call"
    SHELL_COMMAND = "shell_command"
    FILE_EDIT = "file_edit"
    TOOL_RESULT = "tool_result"
    TOKEN_USAGE = "token_usage"
    COMPACTION = "compaction"
    SUBAGENT_START = "subagent_start"
    SUBAGENT_END = "subagent_end"
    SESSION_START = "session_start"
    SUMMARY = "summary"
    ERROR = "error"


class UserKind(StrEnum):
    """What a user-role entry is. Only ``PROMPT`` is something the person typed; the CLIs write
    the others with the same role (see docs/audit.md, "Conventions")."""

    PROMPT = "prompt"
    SLASH_COMMAND = "slash_command"
    COMMAND_OUTPUT = "command_output"
    INTERRUPT = "interrupt"
    META = "meta"
    SIDECHAIN = "sidechain"


class Kinds:
    """The members of :class:`EventKind` as plain class attributes, for code that runs per event:
    ``EventKind.USER`` goes through the enum metaclass's attribute hook (about 0.13 µs in CPython
    3.11, ten times a global), ``Kinds.USER`` does not. Same objects: ``Kinds.USER is EventKind.USER``."""

    USER = EventKind.USER
    ASSISTANT = EventKind.ASSISTANT
    THINKING = EventKind.THINKING
    TOOL_CALL = EventKind.TOOL_CALL
    SHELL_COMMAND = EventKind.SHELL_COMMAND
    FILE_EDIT = EventKind.FILE_EDIT
    TOOL_RESULT = EventKind.TOOL_RESULT
    TOKEN_USAGE = EventKind.TOKEN_USAGE
    COMPACTION = EventKind.COMPACTION
    SUBAGENT_START = EventKind.SUBAGENT_START
    SUBAGENT_END = EventKind.SUBAGENT_END
    SESSION_START = EventKind.SESSION_START
    SUMMARY = EventKind.SUMMARY
    ERROR = EventKind.ERROR


class Event(msgspec.Struct, kw_only=True, gc=False, array_like=True):
    """One thing that happened in a session, normalized across agent CLIs.

    A tool call is ``SHELL_COMMAND`` when it runs a command line, ``FILE_EDIT`` when it writes,
    edits or deletes a file (``op``), else ``TOOL_CALL``. Encoded as an array of its field values
    (``array_like``): worker processes send events a segment at a time (see
    :mod:`framework.audit.parallel`), and that is a third of the bytes of a map, and faster.
    """

    kind: EventKind
    index: int = 0
    source: str = ""
    line: int = 0
    ts: float | None = None
    agent: str | None = None
    sidechain: bool = False
    text: str | None = None
    text_size: int = 0
    tool: str | None = None
    call_id: str | None = None
    command: str | None = None
    path: str | None = None
    op: str | None = None
    patch: str | None = None
    status: str | None = None
    exit_code: int | None = None
    output_size: int = 0
    model: str | None = None
    message_id: str | None = None
    request_id: str | None = None
    user_kind: UserKind | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def anchor(self) -> str:
        return f"e{self.index}"

    @property
    def failed(self) -> bool:
        return self.status == "error" or (self.exit_code is not None and self.exit_code != 0)


class EventRecord(BaseModel):
    """The pydantic form of :class:`Event`, used at the boundary (JSON and HTML reports)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EventKind
    index: int
    source: str
    line: int
    ts: float | None = None
    agent: str | None = None
    sidechain: bool = False
    text: str | None = None
    text_size: int = 0
    tool: str | None = None
    call_id: str | None = None
    command: str | None = None
    path: str | None = None
    op: str | None = None
    patch: str | None = None
    status: str | None = None
    exit_code: int | None = None
    output_size: int = 0
    model: str | None = None
    message_id: str | None = None
    request_id: str | None = None
    user_kind: UserKind | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def of(cls, event: Event) -> EventRecord:
        return cls.model_validate(msgspec.structs.asdict(event))

    @property
    def anchor(self) -> str:
        return f"e{self.index}"

    @property
    def time_text(self) -> str:
        if self.ts is None:
            return ""
        return datetime.fromtimestamp(self.ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def clip(text: str | None, limit: int = TEXT_LIMIT) -> str | None:
    """Keep the head of a long text; callers record the full size separately."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + "…"


def parse_timestamp(value: object) -> float | None:
    """Epoch seconds from an ISO 8601 string or a number in seconds or milliseconds; None if unreadable."""
    if type(value) is str:  # the common case first: every line of a transcript carries one
        try:
            return datetime.fromisoformat(value).timestamp() if value else None
        except ValueError:
            return None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    return None
