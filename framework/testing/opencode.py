"""OpenCode's tools, spoken over the Anthropic Messages API.

OpenCode reaches the scripted server through a custom provider built on ``@ai-sdk/anthropic``
(see :func:`framework.testing.clients.opencode_config`), so requests and replies are the Anthropic
ones; only the tools differ: ``bash``, ``write``, ``edit`` and ``read`` with camelCase arguments,
where Claude Code offers ``Bash``, ``Write``, ``Edit`` and ``Read``.
"""

from __future__ import annotations

from typing import Any

from framework.testing.protocol import RequestView, ScriptMismatch, ToolCall, absolute_path
from framework.testing.script import Action


def speaks(view: RequestView) -> bool:
    """The request comes from OpenCode: it offers OpenCode's lowercase ``bash`` and no ``Bash``."""
    return "bash" in view.tool_names and "Bash" not in view.tool_names


def translate(action: Action, view: RequestView, turn: int, index: int) -> ToolCall:
    """Map a portable action onto OpenCode's tools."""
    name: str
    arguments: dict[str, Any]
    if action.bash is not None:
        name, arguments = "bash", {"command": action.bash}
    elif action.write is not None:
        path = absolute_path(action.write.path, view, turn)
        name, arguments = "write", {"filePath": path, "content": action.write.content}
    elif action.edit is not None:
        name = "edit"
        arguments = {
            "filePath": absolute_path(action.edit.path, view, turn),
            "oldString": action.edit.old,
            "newString": action.edit.new,
        }
    elif action.read is not None:
        name, arguments = "read", {"filePath": absolute_path(action.read, view, turn)}
    else:
        assert action.tool is not None
        name, arguments = action.tool.name, dict(action.tool.input)
    if name not in view.tool_names:
        raise ScriptMismatch(
            f"turn {turn + 1}: action {action.kind!r} needs OpenCode's tool {name!r}, which this "
            f"request does not offer (offered: {', '.join(view.tool_names)})"
        )
    return ToolCall(call_id=f"toolu_scripted_{turn + 1:03d}_{index}", name=name, input=arguments)
