"""What the scripted model needs from a request, and what it answers, independent of the wire API.

Each API module (``anthropic``, ``responses``) reads a request body into a :class:`RequestView`,
translates portable script actions into its client's tools, and writes a :class:`Reply` back in
its own format.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

_CWD_PATTERNS = (
    re.compile(r"Primary working directory: (/[^\n\"\\]*)"),
    re.compile(r"Working directory: (/[^\n\"\\]*)"),
    re.compile(r"<cwd>(/[^<]*)</cwd>"),
)


class ScriptMismatch(RuntimeError):
    """The script does not fit the request the CLI sent; the message says how and what to change."""


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    text: str
    calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class RequestView:
    """The parts of a model request the script player looks at."""

    model: str
    stream: bool
    turns_done: int
    tool_names: list[str]
    system_text: str
    context_text: str
    tool_results: list[str]
    cwd: str | None

    @property
    def is_main(self) -> bool:
        """Main requests drive the agent and offer tools; side requests (titles, quota checks) do not."""
        return bool(self.tool_names)


def text_of(value: Any) -> str:
    """All string content of a JSON value, joined by newlines, for substring assertions."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(text_of(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(text_of(v) for k, v in value.items() if k not in ("cache_control", "type"))
    return ""


def find_cwd(body: dict[str, Any]) -> str | None:
    """The CLI's working directory as it tells the model (Claude Code's environment section, Codex's <cwd>)."""
    blob = json.dumps(body, ensure_ascii=False).replace("\\n", "\n")
    for pattern in _CWD_PATTERNS:
        match = pattern.search(blob)
        if match:
            return match.group(1).strip()
    return None


def count_assistant_runs(roles: list[str]) -> int:
    """Number of maximal runs of 'assistant' entries: each run is one earlier model response.

    Deriving the turn from the history (instead of counting requests) makes retries, side
    requests and ``--resume`` land on the right turn.
    """
    runs = 0
    previous = ""
    for role in roles:
        if role == "assistant" and previous != "assistant":
            runs += 1
        if role in ("assistant", "user"):
            previous = role
    return runs


def estimate_tokens(text: str) -> int:
    """A deterministic stand-in for token counts: about four characters per token."""
    return max(1, len(text) // 4)


def absolute_path(path: str, view: RequestView, turn: int) -> str:
    """``path`` made absolute against the working directory the request names."""
    if path.startswith("/"):
        return path
    if view.cwd is None:
        raise ScriptMismatch(
            f"turn {turn + 1}: relative path {path!r} but the request does not say its working "
            "directory; use an absolute path in the script"
        )
    return posixpath.normpath(posixpath.join(view.cwd, path))


def require_offered(name: str, kind: str, view: RequestView, turn: int) -> None:
    """A scripted action may only call a tool that the request offers the model."""
    if name not in view.tool_names:
        raise ScriptMismatch(
            f"turn {turn + 1}: action {kind!r} needs the tool {name!r}, which this request "
            f"does not offer (offered: {', '.join(view.tool_names)})"
        )
