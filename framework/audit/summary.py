"""Totals for the summary: tools, files changed, commands, tokens and an estimated cost per model."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, Field

from framework.audit.events import Event, Kinds, UserKind

MAX_COMMANDS = 500
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


class ModelUsage(BaseModel):
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = Field(
        default=None, description="estimate from the price table; None when the model is not in it"
    )


class FileChange(BaseModel):
    path: str
    ops: list[str]
    count: int
    first_event: int


class Summary(BaseModel):
    events: int = 0
    by_kind: dict[str, int] = Field(default_factory=dict)
    tools: dict[str, int] = Field(default_factory=dict)
    files_changed: list[FileChange] = Field(default_factory=list)
    commands: list[str] = Field(default_factory=list)
    commands_total: int = 0
    commands_failed: int = 0
    models: list[ModelUsage] = Field(default_factory=list)
    cost_usd: float | None = None
    prices_as_of: str = ""
    started: float | None = None
    ended: float | None = None
    subagents: int = 0
    compactions: int = 0
    prompts: int = Field(default=0, description="user entries the person typed (see docs/audit.md)")
    user_entries: dict[str, int] = Field(
        default_factory=dict, description="user entries by kind: prompt, slash_command, ..."
    )

    @property
    def duration_s(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@cache
def price_table() -> dict[str, Any]:
    return json.loads(resources.files("framework.audit").joinpath("prices.json").read_text())


def price_for(model: str) -> dict[str, float] | None:
    """Prices of the longest table entry that prefixes ``model`` (``claude-sonnet-4-5-2025…``)."""
    models = price_table()["models"]
    assert isinstance(models, dict)
    name = model.lower().split("/")[-1]
    best = max((k for k in models if name.startswith(k)), key=len, default=None)
    return models[best] if best else None


class SummaryBuilder:
    """Accumulates the summary while events stream by, in plain Python values (the pydantic models
    are built once, in :meth:`build`); memory is bounded (commands and files are capped)."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}
        self.tools: dict[str, int] = {}
        self.files: dict[str, tuple[list[str], list[int]]] = {}
        """path -> (ops, [count, first event])"""
        self.commands: list[str] = []
        self.commands_total = 0
        self.commands_failed = 0
        self.usage: dict[str, list[int]] = {}
        """model -> [input, output, cache read, cache write, reasoning] tokens"""
        self.started: float | None = None
        self.ended: float | None = None
        self.shell_ids: set[str] = set()
        self.user_kinds: dict[str, int] = {}

    def observe(self, event: Event) -> None:
        kind = event.kind
        kinds = self.kinds
        kinds[kind] = kinds.get(kind, 0) + 1
        ts = event.ts
        if ts is not None:
            if self.started is None or ts < self.started:
                self.started = ts
            if self.ended is None or ts > self.ended:
                self.ended = ts
        tool = event.tool
        if tool:
            self.tools[tool] = self.tools.get(tool, 0) + 1
        if kind is Kinds.SHELL_COMMAND:
            self.commands_total += 1
            if len(self.commands) < MAX_COMMANDS and event.command:
                self.commands.append(event.command[:300])
            if event.call_id and len(self.shell_ids) < 100_000:
                self.shell_ids.add(event.call_id)
        elif kind is Kinds.TOOL_RESULT:
            if event.failed and event.call_id in self.shell_ids:
                self.commands_failed += 1
        elif kind is Kinds.FILE_EDIT and event.path:
            change = self.files.get(event.path)
            if change is None:
                if len(self.files) < 10_000:
                    self.files[event.path] = ([event.op or "edit"], [1, event.index])
            else:
                ops, counts = change
                counts[0] += 1
                if event.op and event.op not in ops:
                    ops.append(event.op)
        elif kind is Kinds.USER:
            sort = event.user_kind or UserKind.PROMPT
            self.user_kinds[sort] = self.user_kinds.get(sort, 0) + 1
        elif kind is Kinds.TOKEN_USAGE:
            name = event.model or "(unknown model)"
            usage = self.usage.get(name)
            if usage is None:
                usage = self.usage[name] = [0, 0, 0, 0, 0]
            usage[0] += event.input_tokens
            usage[1] += event.output_tokens
            usage[2] += event.cache_read_tokens
            usage[3] += event.cache_write_tokens
            usage[4] += event.reasoning_tokens

    def build(self) -> Summary:
        total: float | None = None
        models = []
        for name in sorted(self.usage):
            usage = ModelUsage(model=name, **dict(zip(TOKEN_FIELDS, self.usage[name], strict=True)))
            prices = price_for(name)
            if prices is not None:
                usage.cost_usd = round(
                    (
                        usage.input_tokens * prices["input"]
                        + usage.output_tokens * prices["output"]
                        + usage.cache_read_tokens * prices["cache_read"]
                        + usage.cache_write_tokens * prices["cache_write"]
                    )
                    / 1e6,
                    4,
                )
                total = (total or 0.0) + usage.cost_usd
            models.append(usage)
        files = [
            FileChange(path=path, ops=ops, count=counts[0], first_event=counts[1])
            for path, (ops, counts) in sorted(self.files.items())
        ]
        return Summary(
            events=sum(self.kinds.values()),
            by_kind=dict(self.kinds),
            tools=dict(Counter(self.tools).most_common()),
            files_changed=files,
            commands=self.commands,
            commands_total=self.commands_total,
            commands_failed=self.commands_failed,
            models=models,
            cost_usd=round(total, 4) if total is not None else None,
            prices_as_of=str(price_table()["as_of"]),
            started=self.started,
            ended=self.ended,
            subagents=self.kinds.get(Kinds.SUBAGENT_START, 0),
            compactions=self.kinds.get(Kinds.COMPACTION, 0),
            prompts=self.user_kinds.get(UserKind.PROMPT, 0),
            user_entries={str(k): v for k, v in sorted(self.user_kinds.items())},
        )
