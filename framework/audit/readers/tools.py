"""Normalize one tool call of any CLI into events: shell command, file edit(s), or plain tool call."""

from __future__ import annotations

import shlex
from typing import Any

from msgspec.structs import replace

from framework.audit.events import Event, Kinds, clip

SHELL_TOOLS = frozenset(
    {
        "bash",
        "shell",
        "shell_command",
        "exec_command",
        "run_shell_command",
        "local_shell",
        "local_shell_call",
    }
)
EDIT_TOOLS = {
    "edit": "edit",
    "multiedit": "edit",
    "replace": "edit",
    "notebookedit": "edit",
    "str_replace_based_edit_tool": "edit",
    "write": "write",
    "write_file": "write",
    "create_file": "write",
}
PATCH_TOOLS = frozenset({"apply_patch", "patch"})
PATH_KEYS = ("file_path", "filePath", "notebook_path", "absolute_path", "path")
PATCH_MARKERS = (
    ("*** Add File: ", "write"),
    ("*** Update File: ", "edit"),
    ("*** Delete File: ", "delete"),
    ("*** Move to: ", "write"),
)


def command_text(value: Any) -> str | None:
    """A command line from a string or an argv list; ``bash -lc X`` becomes ``X``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if (
            len(value) == 3
            and value[0].rsplit("/", 1)[-1] in ("bash", "sh", "zsh")
            and value[1] in ("-lc", "-c")
        ):
            return str(value[2])
        return shlex.join(value)
    return None


def patch_files(patch: str) -> list[tuple[str, str]]:
    """``(path, op)`` for each file an apply_patch envelope touches."""
    found = []
    for line in patch.splitlines():
        for marker, op in PATCH_MARKERS:
            if line.startswith(marker):
                found.append((line[len(marker) :].strip(), op))
    return found


def tool_call_events(base: Event, name: str, args: Any) -> list[Event]:
    """Events for one tool call. ``base`` holds the shared fields (source, line, time, call id,
    model); each event is a copy of it with its own kind and details (index is set by the caller)."""
    key = name.lower()
    if not isinstance(args, dict):
        args = {"input": args} if isinstance(args, str) else {}
    if key in SHELL_TOOLS:
        command = command_text(args.get("command")) or command_text(args.get("cmd"))
        if command is not None and command.startswith("apply_patch"):
            return _patch_events(base, name, command)
        return [replace(base, kind=Kinds.SHELL_COMMAND, tool=name, command=clip(command))]
    if key in PATCH_TOOLS:
        patch = args.get("input") or args.get("patch") or args.get("patchText")
        if isinstance(patch, str):
            return _patch_events(base, name, patch)
    if key in EDIT_TOOLS:
        path = _path(args)
        return [replace(base, kind=Kinds.FILE_EDIT, tool=name, path=path, op=EDIT_TOOLS[key])]
    return [
        replace(base, kind=Kinds.TOOL_CALL, tool=name, path=_path(args), text=clip(_summary(args)))
    ]


def _patch_events(base: Event, name: str, patch: str) -> list[Event]:
    files: list[tuple[str | None, str]] = list(patch_files(patch)) or [(None, "edit")]
    kept = clip(patch)
    return [
        replace(base, kind=Kinds.FILE_EDIT, tool=name, path=p, op=op, patch=kept) for p, op in files
    ]


def _path(args: dict[str, Any]) -> str | None:
    for key in PATH_KEYS:
        value = args.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _summary(args: dict[str, Any]) -> str | None:
    """A short view of the arguments that matter for reading the timeline (URL, query, pattern)."""
    for key in ("url", "query", "pattern", "prompt", "description"):
        value = args.get(key)
        if isinstance(value, str) and value:
            return f"{key}: {value}"
    return None
