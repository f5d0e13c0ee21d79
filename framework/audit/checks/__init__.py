"""The methodology checks, by stable id. ``CHECKS`` documents them; ``Checker`` runs them."""

from __future__ import annotations

from framework.audit.checks.base import AuditConfig, Check, CheckContext, Finding, Severity
from framework.audit.checks.network import NetworkEgress, NetworkWhenOffline
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
from framework.audit.events import Event, EventKind

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
        self.by_kind = {kind: [c for c in self.checks if kind in c.kinds] for kind in EventKind}
        self.split_cache: dict[str, list[list[str]]] = {}

    def observe(self, event: Event) -> None:
        argv = None
        if event.kind is EventKind.SHELL_COMMAND and event.command:
            argv = self._split(event.command)
        ctx = self.ctx
        for check in self.by_kind[event.kind]:
            check.observe(event, argv, ctx)

    def _split(self, command: str) -> list[list[str]]:
        """The command's argv lists; agents rerun the same commands, so results are remembered."""
        argv = self.split_cache.get(command)
        if argv is None:
            if len(self.split_cache) > 2048:
                self.split_cache.clear()
            wanted = SHELL_WORDS.search(command) or has_secret_hint(command)
            argv = split_command(command) if wanted else []
            self.split_cache[command] = argv
        return argv

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
