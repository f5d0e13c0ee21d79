"""Pick the script turn a request asks for, check the script's expectations, build the reply."""

from __future__ import annotations

from collections.abc import Callable

from framework.testing.protocol import Reply, RequestView, ScriptMismatch, ToolCall
from framework.testing.script import Action, Expect, Script

Translate = Callable[[Action, RequestView, int, int], ToolCall]

_SHOWN = 300


def _shown(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= _SHOWN else flat[:_SHOWN] + "...")


def expectation_problems(expect: Expect, view: RequestView) -> list[str]:
    """Every way the request falls short of ``expect``, in words."""
    problems: list[str] = []
    for needle in expect.context_contains:
        if needle not in view.context_text:
            problems.append(
                f"expected {needle!r} somewhere in the prompt and messages; it is not there"
            )
    for needle in expect.system_contains:
        if needle not in view.system_text:
            problems.append(
                f"expected {needle!r} in the system prompt or instructions, which begin {_shown(view.system_text)}"
            )
    results = "\n".join(view.tool_results)
    for needle in expect.tool_result_contains:
        if needle not in results:
            shown = (
                _shown(results) if view.tool_results else "absent (no tool results in this request)"
            )
            problems.append(f"expected {needle!r} in the tool results, which are {shown}")
    for needle in expect.tool_result_excludes:
        if needle in results:
            problems.append(
                f"expected {needle!r} not to be in the tool results, which are {_shown(results)}"
            )
    for name in expect.tools_offered:
        if name not in view.tool_names:
            problems.append(
                f"expected the tool {name!r} to be offered; offered: {', '.join(view.tool_names)}"
            )
    return problems


def next_reply(script: Script, view: RequestView, translate: Translate) -> tuple[int, Reply]:
    """The turn this main request asks for and the reply to send; raises :class:`ScriptMismatch`."""
    turn_index = view.turns_done
    if turn_index >= len(script.turns):
        raise ScriptMismatch(
            f"the CLI asks for turn {turn_index + 1} but the script has only {len(script.turns)}; "
            "add a turn, or make the last turn text-only so the agent stops"
        )
    turn = script.turns[turn_index]
    problems = expectation_problems(script.expect, view) + expectation_problems(turn.expect, view)
    if problems:
        raise ScriptMismatch(f"turn {turn_index + 1}: " + "; ".join(problems))
    calls = [translate(action, view, turn_index, k) for k, action in enumerate(turn.actions)]
    return turn_index, Reply(text=turn.text, calls=calls)
