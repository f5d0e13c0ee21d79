"""``evaluation-diverged``: the protected paths changed during the session (from the ledger).

At launch the launcher hashes the protected paths and keeps a pristine copy on the host; jobs run
that copy (framework/evaluation.py). At every submit and at session end the broker and the
launcher compare the workspace's protected paths with it and record any difference as an
``evaluation_diverged`` ledger event: an edit, a replacement, a removal or rename, a creation. The
jobs were not affected, but the workspace's judge is no longer the one the session started with,
whoever changed it (the agent by a way round the read-only mounts, or a host-side step): an error.
"""

from __future__ import annotations

import json

from framework.audit.checks.base import CheckContext, Finding, Severity, StreamingCheck

CHANGES_SHOWN = 5
"""Changes named in a finding's message; the evidence lists every one the event recorded."""


def one_line(value: object) -> str:
    """Text from the ledger (names the agent chose) with every control and non-ASCII character
    as a visible JSON escape: nothing in a finding can drive the reader's terminal."""
    return json.dumps(str(value))[1:-1]


class EvaluationDiverged(StreamingCheck):
    id = "evaluation-diverged"
    severity = Severity.ERROR
    title = "protected paths diverged from the pristine copy taken at launch (ledger)"

    def applies(self, ctx: CheckContext) -> bool:
        return ctx.divergences is not None and bool(ctx.session_id)

    def finish(self, ctx: CheckContext) -> list[Finding]:
        source, session = ctx.divergences, ctx.session_id
        if source is None or not session:
            return []
        severity = ctx.config.severity.get(self.id, self.severity)
        try:
            divergences = source.diverged(session)
        except Exception as exc:  # a broken ledger must not hide the transcript findings
            return [
                Finding(
                    check=self.id,
                    severity=severity,
                    message="the session's evaluation divergences could not be read from the "
                    f"ledger: {one_line(exc)}",
                )
            ]
        found = []
        for event in divergences:
            shown = ", ".join(
                f"{one_line(c['path'])!r} {one_line(c['change'])}"
                for c in event.changes[:CHANGES_SHOWN]
            )
            more = event.changes_total - min(len(event.changes), CHANGES_SHOWN)
            when = "at a submit" if event.when == "submit" else "at session end"
            found.append(
                Finding(
                    check=self.id,
                    severity=severity,
                    message=(
                        f"protected paths differ from the pristine copy taken at launch ({when}): "
                        f"{shown}{f' and {more} more' if more > 0 else ''}; jobs ran the pristine "
                        f"evaluation {one_line(event.evaluation_sha256 or '?')[:12]}"
                    ),
                    evidence=(
                        f"ledger event #{event.seq}: pristine {one_line(event.evaluation_sha256)}, "
                        f"workspace {one_line(event.current_sha256)}; "
                        + "; ".join(
                            f"{one_line(c['path'])}: {one_line(c['change'])}" for c in event.changes
                        )
                    ),
                )
            )
        return found
