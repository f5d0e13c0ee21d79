"""``rejected-request``: the session's ``remote-run`` requests the broker refused, from the ledger.

The broker records every refusal as a ``request_rejected`` ledger event (field, reason, size,
sha256, a bounded copy of the request). The check reads those of the audited session only, lazily
and in pages, after the transcript has streamed by, and links each to the transcript's
``remote-run`` command when one can be matched:

1. by output: ``remote-run`` prints ``rejected: FIELD: REASON``; a shell command whose (failed)
   result shows that line is the one, the n-th such line going with the n-th such refusal;
2. else by time: the last shell command naming ``remote-run`` issued at most
   :data:`MATCH_WINDOW_S` before the refusal (both clocks are the host's);
3. else no link.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from framework.audit.checks.base import CheckContext, Finding, Severity, StreamingCheck
from framework.audit.events import Event, EventKind, EventRecord
from framework.audit.ledger import LedgerRejection

RATE_LIMIT_FIELD = "rate-limit"
"""The field of the event a broker writes at stop for the refusals its rate limit did not record."""
REJECTED_TEXT = re.compile(r"rejected: ([^\r\n]+)")
MATCH_WINDOW_S = 600.0
"""How long before a refusal the ``remote-run`` command matched by time may have started."""
CLOCK_SLACK_S = 5.0
"""How far after the refusal a command's transcript timestamp may lie (rounding, clock steps)."""
COUNT_LIMIT = 100_000
"""Refusals beyond the listed ones are counted up to this many; past it the summary says 'at least'."""
KEEP_COMMANDS = 20_000
"""``remote-run`` commands (and ``rejected:`` output lines) remembered for matching."""
OUTSIDE = re.compile(r"resolves to .*, outside the workspace |contains '\.\.'")
DOES_NOT_EXIST = re.compile(r"does not exist inside the workspace (/\S*)$")


def escape_attempt(rejection: LedgerRejection) -> str | None:
    """Why the refused request reads as an attempt to leave the workspace, or None.

    Only the working directory is a path the broker checks against the workspace, so only refusals
    of ``request.cwd`` (the request's own check) or ``cwd`` (the broker's, symlinks resolved)
    count: the broker's reason says the path contains ``..`` or resolves outside the workspace, the
    copy of the request has a ``cwd`` with a ``..`` part, or the reason says 'does not exist inside
    the workspace ROOT' of an absolute ``cwd`` not under ROOT. A mistyped relative directory stays
    a plain refusal."""
    if rejection.field not in ("cwd", "request.cwd"):
        return None
    if OUTSIDE.search(rejection.reason):
        return "cwd outside the workspace"
    cwd = _requested_cwd(rejection.request)
    if cwd is not None:
        if ".." in cwd.split("/"):
            return "cwd with '..'"
        root = DOES_NOT_EXIST.search(rejection.reason)
        if root and cwd.startswith("/"):
            top = root.group(1).rstrip("/")
            path = posixpath.normpath(cwd)
            if path != top and not path.startswith(top + "/"):
                return "absolute cwd outside the workspace"
    return None


def _requested_cwd(request: Any) -> str | None:
    """``request.cwd`` of the recorded copy of a submit (``{"op": "submit", "request": {...}}``)."""
    inner = request.get("request") if isinstance(request, dict) else None
    cwd = inner.get("cwd") if isinstance(inner, dict) else None
    return cwd if isinstance(cwd, str) else None


class RejectedRequest(StreamingCheck):
    id = "rejected-request"
    severity = Severity.WARNING
    title = "remote-run request refused by the broker (ledger)"
    kinds = frozenset({EventKind.SHELL_COMMAND, EventKind.TOOL_RESULT})

    def __init__(self) -> None:
        super().__init__()
        self.overridden: Severity | None = None
        self.pending: dict[str, Event] = {}
        self.commands: deque[Event] = deque(maxlen=KEEP_COMMANDS)
        self.printed: deque[tuple[str, Event]] = deque(maxlen=KEEP_COMMANDS)

    def applies(self, ctx: CheckContext) -> bool:
        return ctx.rejections is not None and bool(ctx.session_id)

    def observe(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> None:
        if event.kind is EventKind.SHELL_COMMAND:
            command = event.command or ""
            if "remote-run" in command:
                self.commands.append(event)
            if event.call_id:
                if len(self.pending) > 4096:
                    self.pending.clear()
                self.pending[event.call_id] = event
        elif event.call_id is not None:
            call = self.pending.pop(event.call_id, None)
            text = event.text
            if call is not None and text and "rejected: " in text:
                for line in REJECTED_TEXT.findall(text):
                    self.printed.append((line.rstrip().rstrip("…"), call))

    def finish(self, ctx: CheckContext) -> list[Finding]:
        source, session = ctx.rejections, ctx.session_id
        if source is None or not session:
            return []
        limit = ctx.config.rejected_request_limit
        self.overridden = ctx.config.severity.get(self.id)
        matcher = _Matcher(list(self.printed), sorted(self.commands, key=_when))
        rest: Counter[str] = Counter()
        escapes = counted = suppressed = 0
        more = False
        listed = 0
        rejections: Iterator[LedgerRejection] | None = None
        try:
            rejections = source.rejected(session)
            for rejection in rejections:
                suppressed += rejection.suppressed
                if rejection.field == RATE_LIMIT_FIELD and rejection.request is None:
                    continue  # only the count of refusals the broker did not record
                escape = escape_attempt(rejection)
                if listed < limit:
                    listed += 1
                    self._flag(rejection, escape, matcher)
                    continue
                if counted >= COUNT_LIMIT:
                    more = True
                    break
                counted += 1
                rest[rejection.field] += 1
                escapes += escape is not None
        except Exception as exc:  # a broken ledger must not hide the transcript findings
            self.found.append(
                Finding(
                    check=self.id,
                    severity=self.overridden or Severity.WARNING,
                    message=f"the session's rejected requests could not be read from the ledger: {exc}",
                )
            )
        finally:
            close = getattr(rejections, "close", None)
            if close is not None:
                close()
        if suppressed:
            self.found.append(
                Finding(
                    check=self.id,
                    severity=self.overridden or Severity.WARNING,
                    message=(
                        f"{'at least ' if more else ''}{suppressed} more request(s) of this session "
                        "were refused but not recorded one by one (the broker's rate limit on "
                        "recorded refusals): was the agent retrying a refused request in a loop?"
                    ),
                )
            )
        if counted:
            fields = ", ".join(f"{name} ×{n}" for name, n in rest.most_common(10))
            others = len(rest) - 10
            if others > 0:
                fields += f", {others} other field(s)"
            escaped = f"; {escapes} read as an attempt to leave the workspace" if escapes else ""
            self.found.append(
                Finding(
                    check=self.id,
                    severity=self.overridden or (Severity.ERROR if escapes else Severity.WARNING),
                    message=(
                        f"{'at least ' if more else ''}{counted} more rejected request(s) of this "
                        f"session not listed (by field: {fields}){escaped}"
                    ),
                )
            )
        return self.found

    def _flag(self, rejection: LedgerRejection, escape: str | None, matcher: _Matcher) -> None:
        command, how = matcher.match(rejection)
        message = f"remote-run request refused, field {rejection.field!r}: {rejection.reason}"
        if escape:
            message += f" (attempt to leave the workspace: {escape})"
        if how == "time":
            message += " [linked to the last remote-run command before it]"
        elif command is None:
            message += " [no matching remote-run command in the transcript]"
        self.found.append(
            Finding(
                check=self.id,
                severity=self.overridden or (Severity.ERROR if escape else Severity.WARNING),
                message=message,
                event=EventRecord.of(command) if command is not None else None,
                evidence=_evidence(rejection),
            )
        )


def _when(event: Event) -> float:
    return event.ts if event.ts is not None else float("-inf")


class _Matcher:
    """Assigns refusals (in ledger order) to transcript commands: by printed output, else by time."""

    def __init__(self, printed: list[tuple[str, Event]], commands: list[Event]) -> None:
        self.printed = printed
        self.used = [False] * len(printed)
        self.commands = commands
        self.times = [_when(e) for e in commands]

    def match(self, rejection: LedgerRejection) -> tuple[Event | None, str | None]:
        error = f"{rejection.field}: {rejection.reason}"
        for i, (line, command) in enumerate(self.printed):
            if self.used[i]:
                continue
            if line == error or (len(line) >= 40 and error.startswith(line)):
                if (
                    rejection.ts is not None
                    and command.ts is not None
                    and command.ts > rejection.ts + CLOCK_SLACK_S
                ):
                    continue
                self.used[i] = True
                return command, "output"
        if rejection.ts is None:
            return None, None
        from bisect import bisect_right

        at = bisect_right(self.times, rejection.ts + CLOCK_SLACK_S) - 1
        if at >= 0 and rejection.ts - self.times[at] <= MATCH_WINDOW_S:
            return self.commands[at], "time"
        return None, None


def _evidence(rejection: LedgerRejection) -> str:
    request: Any = rejection.request
    try:
        copy = request if isinstance(request, str) else json.dumps(request, ensure_ascii=False)
    except (TypeError, ValueError):
        copy = repr(request)
    if len(copy) > 600:
        copy = copy[:600] + "…"
    size = f"{rejection.size} bytes" if rejection.size is not None else "size unknown"
    digest = f", sha256 {rejection.sha256[:16]}…" if rejection.sha256 else ""
    return f"ledger event #{rejection.seq} ({size}{digest}): {copy}"
