"""Totals for the summary: tools, files changed, commands, tokens and an estimated cost per model."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, Field

from framework.audit.events import Event, EventKind

MAX_COMMANDS = 500


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
    """Accumulates the summary while events stream by; memory is bounded (commands are capped)."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.tools: Counter[str] = Counter()
        self.files: dict[str, FileChange] = {}
        self.commands: list[str] = []
        self.commands_total = 0
        self.commands_failed = 0
        self.usage: dict[str, ModelUsage] = {}
        self.started: float | None = None
        self.ended: float | None = None
        self.shell_ids: set[str] = set()

    def observe(self, event: Event) -> None:
        kind = event.kind
        self.kinds[kind] += 1
        if event.ts is not None:
            if self.started is None or event.ts < self.started:
                self.started = event.ts
            if self.ended is None or event.ts > self.ended:
                self.ended = event.ts
        if event.tool:
            self.tools[event.tool] += 1
        if kind is EventKind.SHELL_COMMAND:
            self.commands_total += 1
            if len(self.commands) < MAX_COMMANDS and event.command:
                self.commands.append(event.command[:300])
            if event.call_id and len(self.shell_ids) < 100_000:
                self.shell_ids.add(event.call_id)
        elif kind is EventKind.TOOL_RESULT:
            if event.failed and event.call_id in self.shell_ids:
                self.commands_failed += 1
        elif kind is EventKind.FILE_EDIT and event.path:
            change = self.files.get(event.path)
            if change is None:
                if len(self.files) < 10_000:
                    self.files[event.path] = FileChange(
                        path=event.path, ops=[event.op or "edit"], count=1, first_event=event.index
                    )
            else:
                change.count += 1
                if event.op and event.op not in change.ops:
                    change.ops.append(event.op)
        elif kind is EventKind.TOKEN_USAGE:
            name = event.model or "(unknown model)"
            usage = self.usage.get(name)
            if usage is None:
                usage = self.usage[name] = ModelUsage(model=name)
            usage.input_tokens += event.input_tokens
            usage.output_tokens += event.output_tokens
            usage.cache_read_tokens += event.cache_read_tokens
            usage.cache_write_tokens += event.cache_write_tokens
            usage.reasoning_tokens += event.reasoning_tokens

    def build(self) -> Summary:
        total: float | None = None
        for usage in self.usage.values():
            prices = price_for(usage.model)
            if prices is None:
                continue
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
        return Summary(
            events=sum(self.kinds.values()),
            by_kind=dict(self.kinds),
            tools=dict(self.tools.most_common()),
            files_changed=sorted(self.files.values(), key=lambda f: f.path),
            commands=self.commands,
            commands_total=self.commands_total,
            commands_failed=self.commands_failed,
            models=sorted(self.usage.values(), key=lambda u: u.model),
            cost_usd=round(total, 4) if total is not None else None,
            prices_as_of=str(price_table()["as_of"]),
            started=self.started,
            ended=self.ended,
            subagents=self.kinds[EventKind.SUBAGENT_START],
            compactions=self.kinds[EventKind.COMPACTION],
        )
