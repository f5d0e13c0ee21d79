"""What the host prints from the agent's text: escaped (framework/textsafe.py), and the broker's
decoding of whatever arrives on its socket (framework/dispatch/models.py: decode_request)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from framework.audit.readers.base import ReaderStats
from framework.audit.render.text import render_text
from framework.audit.report import AuditReport
from framework.audit.summary import FileChange, ModelUsage, Summary
from framework.cli import app
from framework.dispatch.models import MAX_NESTING, RequestError, decode_request
from framework.sandbox.store import SessionRecord, SessionStore
from framework.textsafe import cell, multi_line, one_line

FORGED = "ok\x1b[2K\r\x1b[32mfinished\x07\x9b2J\u202etxt\u2028[link=file:///etc]x[/link]"
LIVE = ("\x1b", "\r", "\x07", "\x9b", "\u202e", "\u2028")


def test_control_characters_become_visible_escapes_and_nothing_is_dropped() -> None:
    assert one_line("a\x1b[31mb\nc\td") == "a\\x1b[31mb\\x0ac\\x09d"
    assert multi_line("a\x1b[31mb\nc\td\r") == "a\\x1b[31mb\nc\td\\x0d"
    assert one_line("\x7f\x85\u200f\u2066é😀") == "\\x7f\\x85\\u200f\\u2066é😀"
    assert multi_line("plain text, ünïcode") == "plain text, ünïcode"


def test_a_rich_cell_is_never_read_as_markup() -> None:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(cell(FORGED))
    printed = out.getvalue()
    assert "[link=file:///etc]x[/link]" in printed
    assert not any(c in printed for c in LIVE)


def test_audit_text_report_prints_transcript_text_escaped() -> None:
    report = AuditReport(
        target=f"/ws/{FORGED}.jsonl",
        session_id=FORGED,
        workspace="/ws",
        reader=ReaderStats(format="claude", unknown_record_types={FORGED: 1}),
        summary=Summary(
            tools={FORGED: 2},
            files_changed=[FileChange(path=FORGED, ops=["write"], count=1, first_event=0)],
            models=[ModelUsage(model=FORGED, input_tokens=1)],
        ),
        findings=[{"check": "x", "severity": "error", "message": f"ran {FORGED}"}],  # type: ignore[list-item]
        ledger_error=FORGED,
    )
    out = io.StringIO()
    render_text(report, Console(file=out, width=400, color_system=None))
    printed = out.getvalue()
    assert not any(c in printed for c in LIVE), printed
    assert printed.count("\\x1b[2K") >= 7
    assert "[link=file:///etc]" in printed


def test_sessions_list_prints_a_record_read_back_from_the_state_dir_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ws").mkdir()
    monkeypatch.setenv("AR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("COLUMNS", "400")
    store = SessionStore(tmp_path / "state" / "sessions")
    record = SessionRecord(
        id="s-1",
        tool=FORGED,
        runtime="bwrap",
        network="none",
        workspace=tmp_path / "ws",
        started_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    store.save(record)
    result = CliRunner().invoke(app, ["sessions", "list", "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert not any(c in result.output for c in LIVE), result.output
    assert "\\x1b[2K" in result.output


def test_an_error_that_quotes_the_agent_is_printed_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from framework.cli import fail

    fail(f"no run {FORGED!s}")
    err = capsys.readouterr().err
    assert not any(c in err for c in LIVE) and "\\x1b[2K" in err


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"[" * 200_000, "nested deeper"),
        (b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), "nested deeper"),
        (b'{"a": ' * 20 + b"1" + b"}" * 20, "nested deeper"),
        (b"\xff", "not valid JSON"),
        ('{"op": "ping"}'.encode("utf-16"), "not valid JSON"),
        (b'{"n": NaN}', "not valid JSON"),
        (b'{"n": -Infinity}', "not valid JSON"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"x" * (256 * 1024 + 1), "larger than the limit"),
    ],
)
def test_decode_request_refuses_what_cannot_be_a_request(raw: bytes, why: str) -> None:
    with pytest.raises(RequestError, match=why):
        decode_request(raw)


def test_decode_request_keeps_requests_up_to_the_nesting_limit() -> None:
    deep = b"[" * MAX_NESTING + b"]" * MAX_NESTING
    assert decode_request(deep) is not None
    assert decode_request(b'{"op": "ping"}\n') == {"op": "ping"}
