"""``git-indirection-planted``: the session left things in ``.git`` that the user's git follows.

The host's own git ran nothing the agent wrote (framework/hostgit.py); the user's own ``git
status`` or ``git commit`` in the workspace afterwards reads ``.git`` as it finds it. At session end
the launcher lists what there would make that git read another config or run a program (a
``commondir``, alternates, a nested repository, a hook or config changed during the session...) as
a ``git_indirection_planted`` ledger event (framework/gitplanted.py). An error: until it is
inspected and removed, running git in that workspace may run a program the agent chose.
"""

from __future__ import annotations

from framework.audit.checks.base import CheckContext, Finding, Severity, StreamingCheck
from framework.audit.checks.evaluation import one_line

ENTRIES_SHOWN = 5
"""Entries named in a finding's message; the evidence lists every one the event recorded."""


class GitIndirectionPlanted(StreamingCheck):
    id = "git-indirection-planted"
    severity = Severity.ERROR
    title = "the session left git indirections or executable git settings in the repository"

    def applies(self, ctx: CheckContext) -> bool:
        return ctx.git_plants is not None and bool(ctx.session_id)

    def finish(self, ctx: CheckContext) -> list[Finding]:
        source, session = ctx.git_plants, ctx.session_id
        if source is None or not session:
            return []
        severity = ctx.config.severity.get(self.id, self.severity)
        try:
            events = source.git_planted(session)
        except Exception as exc:  # a broken ledger must not hide the transcript findings
            return [
                Finding(
                    check=self.id,
                    severity=severity,
                    message="the session's planted git indirections could not be read from the "
                    f"ledger: {one_line(exc)}",
                )
            ]
        found = []
        for event in events:
            shown = ", ".join(one_line(e["path"]) for e in event.entries[:ENTRIES_SHOWN])
            more = event.total - min(len(event.entries), ENTRIES_SHOWN)
            found.append(
                Finding(
                    check=self.id,
                    severity=severity,
                    message=(
                        f"at session end the repository held {event.total} thing(s) that a later "
                        f"git command there would follow to another config or a program: {shown}"
                        f"{f' and {more} more' if more > 0 else ''}; inspect and remove them "
                        "before running git in the workspace"
                    ),
                    evidence=f"ledger event #{event.seq}: "
                    + "; ".join(
                        f"{one_line(e['path'])}: {one_line(e['why'])}" for e in event.entries
                    ),
                )
            )
        return found
