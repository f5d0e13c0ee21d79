"""The script a scripted model plays: assistant turns, the tool calls in them, and expectations.

A script is YAML or JSON::

    description: write a file, then run it
    expect:                       # checked on every main request
      context_contains: ["METHODOLOGY"]
    turns:
      - text: "Writing the experiment."
        actions:
          - write: {path: exp.py, content: "print(42)\\n"}
          - bash: python3 exp.py
      - expect: {tool_result_contains: ["42"]}
        text: "It printed 42. Done."

Actions are portable: ``bash``, ``write``, ``edit`` and ``read`` are translated into the tools the
requesting CLI offers (Claude Code's Bash/Write/Edit/Read, Codex's exec_command or shell). ``tool``
names a tool and its input verbatim, for anything else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ScriptError(ValueError):
    """The script file is missing or malformed; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expect(_Strict):
    """Checks on the request that asks for a turn. Each listed string must (or must not) occur."""

    context_contains: list[str] = Field(
        default_factory=list,
        description="anywhere the model reads: system prompt, instructions and every message",
    )
    system_contains: list[str] = Field(
        default_factory=list,
        description="in the system prompt, instructions, system or developer messages only",
    )
    tool_result_contains: list[str] = Field(
        default_factory=list, description="in the tool results sent back since the previous turn"
    )
    tool_result_excludes: list[str] = Field(default_factory=list)
    tools_offered: list[str] = Field(default_factory=list, description="tool names the CLI offers")

    def is_empty(self) -> bool:
        return not any(
            (
                self.context_contains,
                self.system_contains,
                self.tool_result_contains,
                self.tool_result_excludes,
                self.tools_offered,
            )
        )


class WriteFile(_Strict):
    path: str
    content: str


class EditFile(_Strict):
    path: str
    old: str
    new: str


class RawTool(_Strict):
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class Action(_Strict):
    """Exactly one of the fields is set."""

    bash: str | None = None
    write: WriteFile | None = None
    edit: EditFile | None = None
    read: str | None = None
    tool: RawTool | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        kinds = ("bash", "write", "edit", "read", "tool")
        if not isinstance(data, dict):
            raise ValueError(f"an action is a mapping with one of {', '.join(kinds)}; got {data!r}")
        unknown = sorted(set(data) - set(kinds))
        if unknown:
            raise ValueError(f"unknown action {unknown[0]!r}; use one of {', '.join(kinds)}")
        if len(data) != 1:
            raise ValueError(f"an action has exactly one of {', '.join(kinds)}; got {sorted(data)}")
        return data

    @property
    def kind(self) -> str:
        for name in ("bash", "write", "edit", "read", "tool"):
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated actions have a kind")


class Turn(_Strict):
    """One assistant response: optional text, then tool calls. A turn without actions ends the agent's turn."""

    expect: Expect = Field(default_factory=Expect)
    text: str = ""
    actions: list[Action] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Turn:
        if not self.text and not self.actions:
            raise ValueError("a turn needs text, actions or both")
        return self


class Script(_Strict):
    description: str = ""
    model: str = Field(default="scripted-model", description="model name reported in responses")
    side_reply: str = Field(
        default="OK", description="text answered to side requests (those that offer no tools)"
    )
    expect: Expect = Field(default_factory=Expect, description="checked on every main request")
    turns: list[Turn] = Field(min_length=1)


def parse_script(data: Any, source: str = "<script>") -> Script:
    """Validate already-parsed YAML/JSON data; errors name ``source`` and the field path."""
    try:
        return Script.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"{where}: {err['msg']}")
        raise ScriptError(f"{source}: not a valid script:\n  " + "\n  ".join(lines)) from None


def load_script(path: Path) -> Script:
    """Read a script file (.yaml, .yml or .json)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read the script: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScriptError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    return parse_script(data, str(path))
