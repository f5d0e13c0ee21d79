"""``rejected-request``: refused ``remote-run`` requests read from a real SQLite ledger."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.audit.checks import AuditConfig, CheckContext, Checker, Finding, Severity
from framework.audit.checks.rejected import escape_attempt
from framework.audit.events import Event, EventKind
from framework.audit.ledger import LedgerRejection, LedgerRuns
from framework.config import Settings
from framework.dispatch.models import bounded_copy
from framework.ledger import EventKind as LedgerKind
from framework.ledger import NewEvent, open_ledger
from framework.workspace import Workspace

ROOT = Path("/work/project")
CHECK = "rejected-request"


def reject(field: str, reason: str, request: dict[str, Any]) -> dict[str, Any]:
    """The payload the broker appends (``Broker._log_rejected``)."""
    raw = json.dumps(request).encode()
    return {
        "field": field,
        "reason": reason,
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "request": bounded_copy(raw),
    }


UNKNOWN_FIELD = reject(
    "request.bogus",
    "unknown field; remove it (see `remote-run --help`)",
    {"op": "submit", "request": {"argv": ["python", "train.py"], "bogus": 1}},
)
DOTDOT = reject(
    "request.cwd",
    "'../../etc' contains '..'; give a path inside the workspace",
    {"op": "submit", "request": {"argv": ["cat", "shadow"], "cwd": "../../etc"}},
)


@pytest.fixture
def ledger_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def record(url: str, session: str, *payloads: dict[str, Any]) -> None:
    with open_ledger(url) as ledger:
        ledger.append_many(
            [NewEvent(LedgerKind.request_rejected, None, session, p) for p in payloads]
        )


def audit(
    url: str, events: list[Event], session: str | None = "s-1", **config: object
) -> list[Finding]:
    ctx = CheckContext(
        config=AuditConfig(**config),
        workspace=Workspace(root=ROOT, settings=Settings()),
        session_id=session,
        rejections=LedgerRuns(url),
    )
    checker = Checker(ctx)
    for i, event in enumerate(events):
        event.index = i
        checker.observe(event)
    return [f for f in checker.finish() if f.check == CHECK]


def remote_run(command: str, call: str, ts: float | None = None) -> Event:
    return Event(kind=EventKind.SHELL_COMMAND, tool="Bash", command=command, call_id=call, ts=ts)


def refused(call: str, text: str, ts: float | None = None) -> Event:
    return Event(
        kind=EventKind.TOOL_RESULT, call_id=call, status="error", exit_code=2, text=text, ts=ts
    )


def test_rejections_of_the_session_are_reported_and_linked_to_the_command(ledger_url: str) -> None:
    record(ledger_url, "s-1", UNKNOWN_FIELD, DOTDOT)
    events = [
        remote_run("ls", "c0"),
        remote_run("remote-run --bogus 1 -- python train.py", "c1"),
        refused(
            "c1",
            "remote-run: rejected: request.bogus: unknown field; remove it (see `remote-run --help`)",
        ),
        remote_run("remote-run --cwd ../../etc -- cat shadow", "c2"),
        refused(
            "c2",
            "rejected: request.cwd: '../../etc' contains '..'; give a path inside the workspace",
        ),
    ]
    findings = audit(ledger_url, events)
    assert len(findings) == 2
    escape, plain = findings  # errors sort first
    assert escape.severity is Severity.ERROR
    assert "'request.cwd'" in escape.message and "contains '..'" in escape.message
    assert "leave the workspace" in escape.message
    assert escape.event is not None and escape.event.index == 3
    assert plain.severity is Severity.WARNING
    assert "'request.bogus'" in plain.message and "unknown field" in plain.message
    assert plain.event is not None and plain.event.index == 1
    assert plain.evidence is not None and '"bogus": 1' in plain.evidence


def test_rejection_is_linked_by_time_and_left_unlinked_without_a_match(ledger_url: str) -> None:
    record(ledger_url, "s-1", UNKNOWN_FIELD)
    with open_ledger(ledger_url) as ledger:
        at = ledger.events(kind=LedgerKind.request_rejected)[0].ts.timestamp()
    # no output shown: the last remote-run command shortly before the refusal
    by_time = audit(
        ledger_url,
        [
            remote_run("remote-run -- python a.py", "c1", ts=at - 120),
            remote_run("remote-run -- python b.py", "c2", ts=at - 1),
            remote_run("remote-run -- python c.py", "c3", ts=at + 60),
        ],
    )
    assert [f.event.command for f in by_time if f.event] == ["remote-run -- python b.py"]
    # only commands long before it, or none naming remote-run: no link
    for events in (
        [remote_run("remote-run -- python a.py", "c1", ts=at - 3600)],
        [remote_run("python a.py", "c1", ts=at - 1)],
        [],
    ):
        (finding,) = audit(ledger_url, events)
        assert finding.event is None and "no matching remote-run command" in finding.message


def test_no_rejections_and_other_sessions_rejections_are_not_reported(ledger_url: str) -> None:
    command = [remote_run("remote-run -- python train.py", "c1")]
    record(ledger_url, "s-1")  # creates the ledger, records nothing
    assert audit(ledger_url, command) == []
    record(ledger_url, "s-2", UNKNOWN_FIELD, DOTDOT)
    with open_ledger(ledger_url) as ledger:
        ledger.append(LedgerKind.session_started, session_id="s-1", payload={})
    assert audit(ledger_url, command) == []
    # without a session id the ledger cannot say which refusals are this session's: not read
    assert audit(ledger_url, command, session=None) == []
    assert len(audit(ledger_url, command, session="s-2")) == 2


def test_findings_are_capped_and_the_rest_summed_up(ledger_url: str) -> None:
    record(ledger_url, "s-1", *([UNKNOWN_FIELD] * 1100), *([DOTDOT] * 7))
    record(ledger_url, "s-2", *([DOTDOT] * 30))
    findings = audit(ledger_url, [], rejected_request_limit=5)
    listed = [f for f in findings if "more rejected request" not in f.message]
    (summary,) = [f for f in findings if "more rejected request" in f.message]
    assert len(listed) == 5 and all(f.severity is Severity.WARNING for f in listed)
    assert summary.message.startswith("1102 more rejected request(s)")
    assert "request.bogus ×1095" in summary.message and "request.cwd ×7" in summary.message
    assert "7 read as an attempt to leave the workspace" in summary.message
    assert summary.severity is Severity.ERROR and summary.event is None
    # the default cap lists 50 and sums up the rest
    assert len(audit(ledger_url, [])) == 51


def test_check_can_be_disabled_and_its_severity_overridden(ledger_url: str) -> None:
    record(ledger_url, "s-1", UNKNOWN_FIELD, DOTDOT)
    assert audit(ledger_url, [], disabled=[CHECK]) == []
    findings = audit(ledger_url, [], severity={CHECK: "info"})
    assert [f.severity for f in findings] == [Severity.INFO, Severity.INFO]


def test_unreadable_ledger_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    broken = tmp_path / "ledger.sqlite"
    broken.write_bytes(b"not a database" * 100)
    (finding,) = audit(f"sqlite:///{broken}", [])
    assert "could not be read from the ledger" in finding.message


@pytest.mark.parametrize(
    ("field", "reason", "cwd", "escape"),
    [
        ("request.cwd", "'../x' contains '..'; give a path inside the workspace", "../x", True),
        ("cwd", "'/etc' resolves to /etc, outside the workspace /w", "/etc", True),
        ("cwd", "'link' resolves to /home, outside the workspace /w", "link", True),
        ("cwd", "'/nope' does not exist inside the workspace /w", "/nope", True),
        ("cwd", "'/w/nope' does not exist inside the workspace /w", "/w/nope", False),
        ("cwd", "'typo' does not exist inside the workspace /w", "typo", False),
        ("cwd", "'file.txt' is not a directory", "file.txt", False),
        ("request.argv", "argv[0] (the program) must not be empty", "..", False),
        ("request", "not valid JSON (x); send one JSON object", None, False),
    ],
)
def test_escape_attempts_are_told_from_the_field_reason_and_request(
    field: str, reason: str, cwd: str | None, escape: bool
) -> None:
    request = {"op": "submit", "request": {"argv": ["x"], "cwd": cwd}} if cwd else "{"
    rejection = LedgerRejection(seq=1, field=field, reason=reason, request=request)
    assert (escape_attempt(rejection) is not None) is escape


def test_refusals_the_broker_did_not_record_are_summed_into_one_finding(ledger_url: str) -> None:
    later = {**UNKNOWN_FIELD, "suppressed": 12}
    at_stop = {"field": "rate-limit", "reason": "30 refused ...", "suppressed": 30}
    record(ledger_url, "s-1", UNKNOWN_FIELD, later, at_stop)
    findings = audit(ledger_url, [])
    assert len(findings) == 3  # the two recorded refusals and one sum; none for the count event
    (summed,) = [f for f in findings if "not recorded one by one" in f.message]
    assert "42 more request(s)" in summed.message and summed.severity is Severity.WARNING
    assert not any("'rate-limit'" in f.message for f in findings)
    record(ledger_url, "s-2", UNKNOWN_FIELD)
    assert not any("not recorded" in f.message for f in audit(ledger_url, [], session="s-2"))
