"""Findings, severities, the audit configuration and the shape every check has."""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from framework.audit.events import Event, EventKind, EventRecord
from framework.audit.ledger import DivergenceSource, GitPlantSource, LedgerRun, RejectionSource
from framework.sandbox.proxy import host_allowed
from framework.workspace import Workspace

MAX_FINDINGS_PER_CHECK = 200
"""Findings kept per check; the rest are counted (``suppressed``) so a runaway loop cannot fill memory."""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return ("info", "warning", "error").index(self.value)


class Finding(BaseModel):
    """One rule broken (or worth a look), pointing at the event that shows it when there is one."""

    model_config = ConfigDict(extra="forbid")

    check: str
    severity: Severity
    message: str
    event: EventRecord | None = None
    evidence: str | None = None

    @property
    def anchor(self) -> str | None:
        return self.event.anchor if self.event is not None else None


DEFAULT_EVALUATION_PATTERNS = [
    "eval/*",
    "*/eval/*",
    "evaluation/*",
    "*/evaluation/*",
    "*eval*.py",
    "*evaluate*",
    "*benchmark*/data/*",
    "tests/data/*",
    "*/test_data/*",
]


class AuditConfig(BaseModel):
    """What the checks look for. Built from :class:`framework.config.Settings` plus audit options."""

    model_config = ConfigDict(extra="forbid")

    protected_paths: list[str] = Field(
        default_factory=lambda: ["eval/", "tests/data/", ".git/hooks/", ".git/config"]
    )
    evaluation_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EVALUATION_PATTERNS)
    )
    package_manager: str = "uv"
    network_policy: str = "allowlist"
    network_allowlist: list[str] | None = Field(
        default=None,
        description="hosts the 'allowlist' policy lets through (None: sandbox.network_allowlist)",
    )
    idle_gap_minutes: float = Field(default=30.0, gt=0)
    loop_threshold: int = Field(default=3, ge=2)
    report_tex: str = "report.tex"
    rejected_request_limit: int = Field(
        default=50,
        ge=1,
        description="rejected requests listed one by one; the rest are summed up in one finding",
    )
    disabled: list[str] = Field(default_factory=list, description="check ids to skip")
    severity: dict[str, Severity] = Field(
        default_factory=dict, description="severity overrides by check id"
    )


@dataclass
class CheckContext:
    """What checks may consult besides the events: the workspace, settings, the session's runs and
    (lazily, by the check that needs them) its rejected requests."""

    config: AuditConfig
    workspace: Workspace
    runs: list[LedgerRun] | None = None
    session_id: str | None = None
    rejections: RejectionSource | None = None
    """Where the session's refused ``remote-run`` requests are read (None: nowhere)."""
    divergences: DivergenceSource | None = None
    """Where the session's ``evaluation_diverged`` events are read (None: nowhere)."""
    git_plants: GitPlantSource | None = None
    """Where the session's ``git_indirection_planted`` events are read (None: nowhere)."""

    def __post_init__(self) -> None:
        self.idle_gap_s = self.config.idle_gap_minutes * 60
        """``idle_gap_minutes`` in seconds (read for every event)."""
        self._root = self.workspace.root.as_posix().rstrip("/") + "/"
        protected = [posixpath.normpath(p) for p in self.config.protected_paths]
        self._protected = frozenset(protected)
        self._protected_dirs = tuple(p + "/" for p in protected)
        self._evaluation = re.compile(
            "|".join(fnmatch.translate(p) for p in self.config.evaluation_patterns) or "(?!)"
        )
        self._classified: dict[str, tuple[str | None, bool, bool]] = {}
        allowlist = self.config.network_allowlist
        if allowlist is None:
            allowlist = self.workspace.settings.sandbox.network_allowlist
        self._allowlist = list(allowlist)

    def relative(self, path: str | None) -> str | None:
        """``path`` relative to the workspace root (normalized), or None when it lies outside."""
        if not path:
            return None
        if path.startswith("/"):
            if not path.startswith(self._root):
                return None
            path = path[len(self._root) :]
        rel = posixpath.normpath(path)
        return None if rel.startswith("../") or rel == ".." else rel

    def classify(self, path: str) -> tuple[str | None, bool, bool]:
        """``(relative path, protected, evaluation file)`` for a path an event changes. Agents
        write the same few files again and again, so answers are remembered."""
        known = self._classified.get(path)
        if known is None:
            rel = self.relative(path)
            protected = rel is not None and self.is_protected(rel)
            evaluation = rel is not None and not protected and self.is_evaluation(rel)
            if len(self._classified) >= 4096:
                self._classified.clear()
            known = self._classified[path] = (rel, protected, evaluation)
        return known

    def is_protected(self, rel: str) -> bool:
        """Same rule as :meth:`Workspace.is_protected` on a workspace-relative path, without pathlib
        (this runs for every written path of a long session)."""
        return rel in self._protected or rel.startswith(self._protected_dirs)

    def host_allowed(self, host: str) -> bool:
        """Whether the egress proxy lets ``host`` through (same matching rule as the proxy)."""
        return host_allowed(host, self._allowlist)

    def is_evaluation(self, rel: str) -> bool:
        """Whether ``rel`` matches one of ``evaluation_patterns`` (fnmatch rules, one regex)."""
        return self._evaluation.match(rel) is not None


Observe: TypeAlias = Callable[[Event, "list[list[str]] | None", "CheckContext"], None]
"""A check's ``observe``: the event, the argv lists of a shell command, the context."""
Verdict: TypeAlias = tuple[str, "str | None"]
"""What a check flags: the message and the evidence (see :meth:`StreamingCheck.flag`)."""


def program_name(word: str) -> str:
    """The name a check's ``programs`` use for an argv[0]: ``python`` for every python3.X."""
    return "python" if word.startswith("python") else word


class Check(Protocol):
    """A rule. Streaming checks see each event once (``observe``); all report in ``finish``."""

    id: str
    severity: Severity
    title: str
    kinds: frozenset[EventKind]
    stateless: bool

    @property
    def programs(self) -> frozenset[str] | None:
        """For shell commands: called only for those running one of these programs (by
        :func:`program_name`); None: for every command."""
        ...

    def applies(self, ctx: CheckContext) -> bool:
        """Whether the check can find anything under this configuration (else it is not run)."""
        ...

    def observe(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> None: ...

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        """For a ``stateless`` check: what ``observe`` flags for this event."""
        ...

    def flag(self, event: Event | None, message: str, evidence: str | None = None) -> None: ...

    def finish(self, ctx: CheckContext) -> list[Finding]: ...


class StreamingCheck:
    """Base for checks that collect findings while events stream by."""

    id = ""
    severity = Severity.WARNING
    title = ""
    kinds: frozenset[EventKind] = frozenset()
    programs: frozenset[str] | None = None
    stateless = False
    """True when what the check flags for an event depends on that event alone (and the
    configuration), never on the events before it: it implements :meth:`judge`, and its verdict on
    a shell command, which then depends on the command line alone, is remembered by the
    :class:`~framework.audit.checks.Checker` for the next event running the same command."""

    def __init__(self) -> None:
        self.found: list[Finding] = []
        self.suppressed = 0

    def flag(self, event: Event | None, message: str, evidence: str | None = None) -> None:
        if len(self.found) >= MAX_FINDINGS_PER_CHECK:
            self.suppressed += 1
            return
        record = EventRecord.of(event) if event is not None else None
        self.found.append(
            Finding(
                check=self.id,
                severity=self.severity,
                message=message,
                event=record,
                evidence=evidence,
            )
        )

    def applies(self, ctx: CheckContext) -> bool:
        return True

    def observe(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> None:
        for message, evidence in self.judge(event, argv, ctx):
            self.flag(event, message, evidence)

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        return []

    def finish(self, ctx: CheckContext) -> list[Finding]:
        if self.suppressed:
            self.found.append(
                Finding(
                    check=self.id,
                    severity=self.severity,
                    message=f"{self.suppressed} more findings of this check were not listed",
                )
            )
        return self.found
