"""The methodology checks, by stable id. ``CHECKS`` documents them; ``Checker`` runs them."""

from __future__ import annotations

from typing import TypeAlias

from framework.audit.checks.base import (
    AuditConfig,
    Check,
    CheckContext,
    Finding,
    Observe,
    Severity,
    program_name,
)
from framework.audit.checks.evaluation import EvaluationDiverged
from framework.audit.checks.gitplanted import GitIndirectionPlanted
from framework.audit.checks.network import NetworkEgress, NetworkWhenOffline
from framework.audit.checks.rejected import RejectedRequest
from framework.audit.checks.report import report_findings
from framework.audit.checks.rules import (
    SHELL_WORDS,
    EvaluationFileTouched,
    FailingCommandLoop,
    GitAddAll,
    GitHistoryRewrite,
    GitNoVerify,
    IdleGap,
    PipWithUv,
    ProtectedPathModified,
    SuccessAfterFailure,
)
from framework.audit.checks.secret import SecretAccess, has_secret_hint
from framework.audit.checks.shell import split_command
from framework.audit.events import Event, EventKind, Kinds

STREAMING = (
    ProtectedPathModified,
    EvaluationFileTouched,
    GitAddAll,
    GitHistoryRewrite,
    GitNoVerify,
    PipWithUv,
    SecretAccess,
    NetworkWhenOffline,
    NetworkEgress,
    SuccessAfterFailure,
    IdleGap,
    FailingCommandLoop,
    RejectedRequest,
    EvaluationDiverged,
    GitIndirectionPlanted,
)
REPORT_CHECKS = {
    "report-number-unmatched": (Severity.WARNING, "number in report.tex produced by no ledger run"),
    "report-run-missing": (Severity.ERROR, "run cited in report.tex missing from the ledger"),
    "experiment-unreported": (
        Severity.WARNING,
        "ledger run of the session not cited in the report",
    ),
    "citation-missing": (Severity.ERROR, "\\cite key missing from the bibliography"),
    "citation-unverified": (Severity.WARNING, "bibliography entry without DOI or arXiv id"),
}
TRANSCRIPT_CHECK = (
    "transcript-unreadable",
    Severity.WARNING,
    "lines of the transcript could not be read",
)
CHECKS: dict[str, tuple[Severity, str]] = {
    **{c.id: (c.severity, c.title) for c in STREAMING},
    **REPORT_CHECKS,
    TRANSCRIPT_CHECK[0]: (TRANSCRIPT_CHECK[1], TRANSCRIPT_CHECK[2]),
}

ShellVerdict: TypeAlias = tuple[
    "list[list[str]]", "list[Observe]", "list[tuple[Check, str, str | None]]"
]
"""What :meth:`Checker._shell` remembers of a command line."""

__all__ = ["CHECKS", "AuditConfig", "CheckContext", "Checker", "Finding", "Severity"]


class Checker:
    """Feeds each event to every enabled streaming check, then runs the report checks."""

    def __init__(self, ctx: CheckContext) -> None:
        unknown = sorted((set(ctx.config.disabled) | set(ctx.config.severity)) - set(CHECKS))
        if unknown:
            raise ValueError(
                f"unknown check id(s) {', '.join(unknown)}; known: {', '.join(sorted(CHECKS))}"
            )
        self.ctx = ctx
        self.enabled = set(CHECKS) - set(ctx.config.disabled)
        self.checks: list[Check] = [c() for c in STREAMING if c.id in self.enabled]
        for check in self.checks:
            check.severity = ctx.config.severity.get(check.id, check.severity)
        # bound methods per event kind, without the checks that cannot find anything here; a shell
        # command goes to the stateless checks through ``_shell``, which remembers their verdicts
        active = [c for c in self.checks if c.applies(ctx)]
        shell = Kinds.SHELL_COMMAND
        self.by_kind = {
            kind: [
                c.observe
                for c in active
                if kind in c.kinds
                and (kind is not shell or (c.programs is None and not c.stateless))
            ]
            for kind in EventKind
        }
        self.program_checks = [c for c in active if shell in c.kinds and c.programs is not None]
        self.shell_stateless = [
            c for c in active if shell in c.kinds and c.programs is None and c.stateless
        ]
        """Stateless checks called for every shell command (not only for some programs')."""
        self.shell_cache: dict[str, ShellVerdict] = {}

    def observe(self, event: Event) -> None:
        kind = event.kind
        ctx = self.ctx
        argv = None
        if kind is Kinds.SHELL_COMMAND:
            command = event.command
            if command:
                known = self.shell_cache.get(command) or self._shell(command, event)
                argv, observers, verdicts = known
                for check, message, evidence in verdicts:
                    check.flag(event, message, evidence)
                for observe in observers:
                    observe(event, argv, ctx)
            else:
                for check in self.shell_stateless:
                    check.observe(event, None, ctx)
        for observe in self.by_kind[kind]:
            observe(event, argv, ctx)

    def _shell(self, command: str, event: Event) -> ShellVerdict:
        """The command's argv lists, the stateful checks that look for one of the programs it runs,
        and what the stateless checks flag for it (``event`` is one running ``command``). Agents
        rerun the same commands, so all three are remembered (``shell_cache``): a stateless check's
        verdict on a shell command depends on the command line alone."""
        if len(self.shell_cache) > 2048:
            self.shell_cache.clear()
        wanted = SHELL_WORDS.search(command) or has_secret_hint(command)
        argv = split_command(command) if wanted else []
        programs = {program_name(words[0]) for words in argv if words}
        checks = [c for c in self.program_checks if not programs.isdisjoint(c.programs or ())]
        observers: list[Observe] = [c.observe for c in checks if not c.stateless]
        verdicts = [
            (c, message, evidence)
            for c in (*checks, *self.shell_stateless)
            if c.stateless
            for message, evidence in c.judge(event, argv, self.ctx)
        ]
        known = self.shell_cache[command] = (argv, observers, verdicts)
        return known

    def finish(self, unreadable: str | None = None) -> list[Finding]:
        findings: list[Finding] = []
        for check in self.checks:
            findings.extend(check.finish(self.ctx))
        findings.extend(report_findings(self.ctx, self.enabled, self.ctx.config.severity))
        check_id, default, _ = TRANSCRIPT_CHECK
        if unreadable and check_id in self.enabled:
            findings.append(
                Finding(
                    check=check_id,
                    severity=self.ctx.config.severity.get(check_id, default),
                    message=unreadable,
                )
            )
        findings.sort(key=lambda f: (-f.severity.rank, f.event.index if f.event else -1))
        return findings
