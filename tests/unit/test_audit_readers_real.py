"""The Gemini CLI and OpenCode readers on transcripts the real CLIs wrote.

The fixtures come from tests/integration/test_agent_cli_gemini_opencode.py (Gemini CLI 0.61.0 and
OpenCode 1.18.33 playing tests/fixtures/scripts/write-and-run.yaml against the scripted model):
Gemini's chat recording as written, and the conversation tables of OpenCode's SQLite database as
SQL (its other tables hold accounts and caches the reader never reads).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from framework.audit.audit import resolve, run_audit
from framework.audit.events import Event, EventKind
from framework.audit.readers import detect
from framework.audit.report import AuditReport
from framework.config import Settings

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts" / "real"
GEMINI = REAL / "gemini" / "write-and-run.jsonl"
OPENCODE_SQL = REAL / "opencode" / "write-and-run.sql"
FINAL_TEXT = "The experiment printed accuracy 0.75 and wrote metrics.json. Done."


@pytest.fixture
def opencode_db(tmp_path: Path) -> Path:
    db = tmp_path / "opencode.db"
    with sqlite3.connect(db) as con:
        con.executescript(OPENCODE_SQL.read_text())
    return db


def audit(path: Path) -> AuditReport:
    return run_audit(resolve(str(path)), Settings(), Path("/work/project"))


def of_kind(report: AuditReport, kind: EventKind) -> list[Event]:
    return [e for e in report.timeline if e.kind == kind]


def _assert_write_then_run(report: AuditReport, write_tool: str, shell_tool: str) -> None:
    assert report.reader.corrupt_lines == 0
    assert report.reader.unknown_record_types == {}
    assert report.reader.unknown_fields == {}
    (edit,) = of_kind(report, EventKind.FILE_EDIT)
    assert edit.tool == write_tool and edit.op == "write"
    assert edit.path is not None and edit.path.endswith("/experiment.py")
    (command,) = of_kind(report, EventKind.SHELL_COMMAND)
    assert command.tool == shell_tool
    assert command.command == "python3 experiment.py && echo ran-ok"
    results = of_kind(report, EventKind.TOOL_RESULT)
    assert [(r.call_id, r.status) for r in results] == [
        (edit.call_id, "ok"),
        (command.call_id, "ok"),
    ]
    assert of_kind(report, EventKind.ASSISTANT)[-1].text == FINAL_TEXT
    usage = of_kind(report, EventKind.TOKEN_USAGE)
    assert len(usage) == 3 and all((u.output_tokens or 0) > 0 for u in usage)


def test_real_gemini_transcript_is_detected_and_read_whole() -> None:
    assert detect(GEMINI) == "gemini"
    _assert_write_then_run(audit(GEMINI), "write_file", "run_shell_command")


def test_real_gemini_tool_results_are_not_echoed_as_empty_user_turns() -> None:
    """Gemini CLI writes each batch of tool results as a 'user' message of functionResponse parts."""
    records = [json.loads(line) for line in GEMINI.read_text().splitlines()]
    assert any(
        r.get("type") == "user" and "functionResponse" in r["content"][0]
        for r in records
        if isinstance(r.get("content"), list)
    ), "the fixture no longer has the shape this test is about"
    users = of_kind(audit(GEMINI), EventKind.USER)
    assert [u.text for u in users if not u.text] == []
    assert users[-1].text == "Run the experiment."


def test_real_gemini_failed_shell_exit_code_is_read_from_its_output(tmp_path: Path) -> None:
    """Gemini CLI reports failure only inside the output ("Exit Code: 3"), status stays success."""
    records = [json.loads(line) for line in GEMINI.read_text().splitlines()]
    for record in records:
        for call in record.get("toolCalls") or ():
            if call["name"] == "run_shell_command":
                response = call["result"][0]["functionResponse"]["response"]
                response["output"] = response["output"].replace(
                    "Process Group PGID", "Exit Code: 3\nProcess Group PGID"
                )
    failed = tmp_path / GEMINI.name
    failed.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    shell_result = of_kind(audit(failed), EventKind.TOOL_RESULT)[-1]
    assert (shell_result.status, shell_result.exit_code) == ("error", 3)


def test_real_opencode_database_is_detected_and_read_whole(opencode_db: Path) -> None:
    assert detect(opencode_db) == "opencode"
    report = audit(opencode_db)
    _assert_write_then_run(report, "write", "bash")
    (user,) = of_kind(report, EventKind.USER)
    assert "Run the experiment." in (user.text or "")
