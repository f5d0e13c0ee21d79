"""The audit result: one pydantic model that every renderer (text, JSON, HTML) reads."""

from __future__ import annotations

from pydantic import BaseModel, Field

from framework.audit.checks import Finding, Severity
from framework.audit.events import EventRecord
from framework.audit.ledger import LedgerRun
from framework.audit.readers import ReaderStats
from framework.audit.summary import Summary


class AuditReport(BaseModel):
    target: str
    session_id: str | None = None
    workspace: str
    reader: ReaderStats
    summary: Summary
    findings: list[Finding] = Field(default_factory=list)
    timeline: list[EventRecord] = Field(default_factory=list)
    timeline_omitted: int = 0
    ledger_runs: list[LedgerRun] | None = None
    ledger_error: str | None = None
    checks: dict[str, str] = Field(
        default_factory=dict, description="check id -> title, for the checks that ran"
    )

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Severity}
        for finding in self.findings:
            out[finding.severity.value] += 1
        return out

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=None)
