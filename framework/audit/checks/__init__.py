"""The methodology checks, by stable id. ``CHECKS`` documents them; ``Checker`` runs them."""

from __future__ import annotations

from framework.audit.checks.base import (
    AuditConfig,
    Check,
    CheckContext,
    Finding,
    Observe,
    Severity,
    program_name,
)
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
        # bound methods per event kind, without the checks that cannot find anything here
        active = [c for c in self.checks if c.applies(ctx)]
        shell = Kinds.SHELL_COMMAND
        self.by_kind = {
            kind: [
                c.observe
                for c in active
                if kind in c.kinds and (kind is not shell or c.programs is None)
            ]
            for kind in EventKind
        }
        self.program_checks = [c for c in active if shell in c.kinds and c.programs is not None]
        self.shell_cache: dict[str, tuple[list[list[str]], list[Observe]]] = {}

    def observe(self, event: Event) -> None:
        kind = event.kind
        ctx = self.ctx
        argv = None
        if kind is Kinds.SHELL_COMMAND and event.command:
            argv, observers = self._shell(event.command)
            for observe in observers:
                observe(event, argv, ctx)
        for observe in self.by_kind[kind]:
            observe(event, argv, ctx)

    def _shell(self, command: str) -> tuple[list[list[str]], list[Observe]]:
        """The command's argv lists and the checks that look for one of the programs it runs.
        Agents rerun the same commands, so both are remembered."""
        known = self.shell_cache.get(command)
        if known is None:
            if len(self.shell_cache) > 2048:
                self.shell_cache.clear()
            wanted = SHELL_WORDS.search(command) or has_secret_hint(command)
            argv = split_command(command) if wanted else []
            programs = {program_name(words[0]) for words in argv if words}
            observers: list[Observe] = [
                c.observe for c in self.program_checks if not programs.isdisjoint(c.programs or ())
            ]
            known = (argv, observers)
            self.shell_cache[command] = known
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
