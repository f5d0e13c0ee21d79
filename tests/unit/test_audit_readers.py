"""Readers: every format streams into the common event model; damage is counted, never raised."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from framework.audit.audit import resolve, run_audit
from framework.audit.events import EventKind
from framework.audit.readers import TranscriptError, base, detect
from framework.audit.report import AuditReport
from framework.config import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
CLAUDE = FIXTURES / "claude" / "-work-project" / "5b0c6f1e-0d5a-4c1e-9a57-2f7f1b0b9c01.jsonl"
CODEX = (
    FIXTURES / "codex" / "rollout-2026-11-21T09-00-00-0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.jsonl"
)
CODEX_ZST = FIXTURES / "codex" / "rollout-2026-11-21T09-00-00-compressed.jsonl.zst"
GEMINI = FIXTURES / "gemini" / "session-2026-11-22T08-00-7c1e2d3f.jsonl"
GEMINI_LEGACY = FIXTURES / "gemini" / "session-2026-11-22T07-00-legacy.json"
OPENCODE = FIXTURES / "opencode"
WORKSPACE = Path("/work/project")


def audit(path: Path | str) -> AuditReport:
    return run_audit(resolve(str(path)), Settings(), WORKSPACE)


def kinds(report: AuditReport) -> list[EventKind]:
    return [e.kind for e in report.timeline]


@pytest.fixture
def opencode_db(tmp_path: Path) -> Path:
    db = tmp_path / "opencode.db"
    with sqlite3.connect(db) as con:
        con.executescript((OPENCODE / "opencode.sql").read_text())
    return db


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (CLAUDE, "claude"),
        (CODEX, "codex"),
        (CODEX_ZST, "codex"),
        (GEMINI, "gemini"),
        (GEMINI_LEGACY, "gemini"),
        (OPENCODE, "opencode"),
    ],
)
def test_format_is_detected_from_content(path: Path, expected: str) -> None:
    target = path if path.is_file() else path / "storage"
    assert detect(target) == expected


def test_claude_usage_repeated_per_content_block_is_counted_once_per_message() -> None:
    report = audit(CLAUDE)
    sonnet = next(m for m in report.summary.models if m.model.startswith("claude-sonnet"))
    # msg_01 (1200 in) and msg_02 (40 in) each span two lines; msg_03/msg_04/msg_05 one line each (10 in)
    assert sonnet.input_tokens == 1200 + 40 + 10 + 10 + 10
    assert sonnet.output_tokens == 250 + 90 + 60 + 60 + 60


def test_claude_reader_covers_subagents_summaries_and_compaction() -> None:
    report = audit(CLAUDE)
    k = kinds(report)
    assert k[0] is EventKind.SUMMARY
    assert k.count(EventKind.COMPACTION) == 2  # the boundary and the compact summary
    assert EventKind.SUBAGENT_START in k and EventKind.SUBAGENT_END in k
    sub = [e for e in report.timeline if e.agent == "a1b2c3"]
    assert sub and all(e.sidechain for e in sub)
    assert any(m.model.startswith("claude-haiku") for m in report.summary.models)
    assert report.reader.unknown_record_types == {"claude:future-record-type": 1}


def test_claude_failed_bash_result_carries_exit_code() -> None:
    result = next(
        e for e in audit(CLAUDE).timeline if e.kind is EventKind.TOOL_RESULT and e.status == "error"
    )
    assert result.exit_code == 1


def test_codex_function_call_arguments_are_decoded_from_json_strings() -> None:
    report = audit(CODEX)
    shell = [e for e in report.timeline if e.kind is EventKind.SHELL_COMMAND]
    assert [e.command for e in shell] == ["python -m pytest -q", "git push --force origin main"]
    edits = [(e.path, e.op) for e in report.timeline if e.kind is EventKind.FILE_EDIT]
    assert edits == [
        ("experiments/optimization/frank_wolfe.py", "edit"),
        ("tests/data/gap.npy", "delete"),
    ]
    failed = next(
        e for e in report.timeline if e.kind is EventKind.TOOL_RESULT and e.call_id == "call_A"
    )
    assert failed.exit_code == 1 and failed.status == "error"


def test_codex_cumulative_token_counts_become_deltas_and_duplicates_count_once() -> None:
    (usage,) = audit(CODEX).summary.models
    assert usage.model == "gpt-5-codex"
    assert usage.cache_read_tokens == 9000 and usage.input_tokens == 11000 - 9000
    assert usage.output_tokens == 300


def test_codex_zst_rollout_reads_like_the_plain_one() -> None:
    plain, packed = audit(CODEX), audit(CODEX_ZST)
    assert [e.kind for e in plain.timeline] == [e.kind for e in packed.timeline]
    assert plain.reader.bytes_read == packed.reader.bytes_read


def test_gemini_jsonl_upserts_and_rewinds() -> None:
    report = audit(GEMINI)
    texts = [e.text for e in report.timeline if e.kind is EventKind.USER]
    assert texts == ["Measure the pruning speed."]  # m4 was rewound
    calls = [e for e in report.timeline if e.kind is EventKind.SHELL_COMMAND]
    assert len(calls) == 1  # m2 written twice, kept once (last version)
    result = next(
        e
        for e in report.timeline
        if e.kind is EventKind.TOOL_RESULT and e.call_id == calls[0].call_id
    )
    assert result.exit_code == 6 and result.status == "error"
    assert any(
        e.kind is EventKind.FILE_EDIT and e.path and e.path.endswith("speed.md")
        for e in report.timeline
    )


def test_gemini_legacy_json_gives_the_same_conversation() -> None:
    report = audit(GEMINI_LEGACY)
    assert [e.kind for e in report.timeline][:7] == [e.kind for e in audit(GEMINI).timeline][:7]


def test_opencode_storage_and_database_agree(opencode_db: Path) -> None:
    tree, db = audit(OPENCODE), audit(opencode_db)
    assert [(e.kind, e.command, e.path) for e in tree.timeline] == [
        (e.kind, e.command, e.path) for e in db.timeline
    ]
    (usage,) = db.summary.models
    assert (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
    ) == (900, 120, 3000, 500)
    assert db.reader.unknown_record_types == {"opencode:part:hologram": 1}


def test_corrupt_and_truncated_lines_are_counted_not_raised() -> None:
    report = audit(FIXTURES / "robustness" / "claude_corrupt_truncated.jsonl")
    assert report.reader.corrupt_lines == 1
    assert report.reader.truncated_last_line == ["claude_corrupt_truncated.jsonl"]
    assert any(f.check == "transcript-unreadable" for f in report.findings)
    assert EventKind.ASSISTANT in kinds(report)  # lines after the corrupt one are still read


def test_unknown_fields_are_reported_once_per_record_shape(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    line = '{"type":"user","sessionId":"s","parentUuid":null,"brandNewField":1,"message":{"role":"user","content":"hi"}}\n'
    path.write_text(line * 3)
    report = audit(path)
    assert report.reader.unknown_fields == {"claude:user": ["brandNewField"]}
    assert kinds(report) == [EventKind.USER] * 3


def test_not_a_transcript_gives_an_actionable_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"hello": "world"}\n')
    with pytest.raises(TranscriptError, match="not a transcript of a known format"):
        resolve(str(path))
    with pytest.raises(TranscriptError, match="neither a file, a directory nor a known session id"):
        resolve("no-such-session", sessions_dir=tmp_path)


def test_session_store_directory_resolves_to_its_transcripts(tmp_path: Path) -> None:
    session = tmp_path / "sessions" / "s-42"
    session.mkdir(parents=True)
    (session / "session.json").write_text('{"session_id": "s-42", "workspace": "/work/project"}')
    (session / CODEX.name).write_bytes(CODEX.read_bytes())
    source = resolve("s-42", sessions_dir=tmp_path / "sessions")
    assert source.session_id == "s-42" and source.formats == ["codex"]
    assert source.workspace == WORKSPACE


@pytest.mark.parametrize("fmt", ["claude", "codex"])
def test_real_cli_transcripts_read_without_damage(fmt: str) -> None:
    files = sorted((FIXTURES / "real" / fmt).glob("*.jsonl"))
    if not files:
        pytest.skip(f"no real {fmt} transcript under tests/fixtures/transcripts/real/{fmt}")
    for path in files:
        report = audit(path)
        assert report.reader.corrupt_lines == 0
        assert report.reader.unknown_record_types == {}
        assert EventKind.SHELL_COMMAND in kinds(report)
        assert EventKind.TOKEN_USAGE in kinds(report)


def test_lines_spanning_read_chunks_are_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = audit(CODEX)
    monkeypatch.setattr(base, "CHUNK_BYTES", 7)  # every line now spans several reads
    split = audit(CODEX)
    assert [(e.kind, e.command, e.text) for e in split.timeline] == [
        (e.kind, e.command, e.text) for e in whole.timeline
    ]
    assert (split.reader.lines, split.reader.records) == (whole.reader.lines, whole.reader.records)


def test_cut_bookkeeping_line_is_corrupt_even_though_bookkeeping_is_not_parsed(
    tmp_path: Path,
) -> None:
    snapshot = '{"type":"file-history-snapshot","messageId":"m1","snapshot":{"files":[]}}'
    user = (
        '{"type":"user","sessionId":"s","parentUuid":null,"message":{"role":"user","content":"hi"}}'
    )
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join([user, snapshot, snapshot[:40], user]) + "\n")
    report = audit(path)
    assert report.reader.skipped_lines == 1
    assert report.reader.corrupt_lines == 1 and "s.jsonl:3" in report.reader.corrupt_examples[0]
    assert kinds(report) == [EventKind.USER, EventKind.USER]


def test_codex_ui_event_of_unexpected_shape_is_skipped_not_corrupt(tmp_path: Path) -> None:
    lines = CODEX.read_text().splitlines()
    odd = (
        '{"timestamp":"2026-11-21T09:00:09.000Z","type":"event_msg",'
        '"payload":{"type":"agent_message","content":"a string where items have a list"}}'
    )
    path = tmp_path / "rollout.jsonl"
    path.write_text("\n".join([*lines[:2], odd, *lines[2:]]) + "\n")
    report, plain = audit(path), audit(CODEX)
    assert report.reader.corrupt_lines == 0
    assert report.reader.skipped_lines == plain.reader.skipped_lines + 1
    assert kinds(report) == kinds(plain)


@pytest.mark.parametrize("chunk_bytes", [base.CHUNK_BYTES, 300])
def test_codex_damaged_lines_are_counted_and_keep_every_event_on_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    """Rollouts are decoded a block of lines at a time: a blank line, a cut line or two records
    on one line must be counted as line-by-line reading counts them, and move no event."""
    monkeypatch.setattr(base, "CHUNK_BYTES", chunk_bytes)
    lines = CODEX.read_text().splitlines()
    ui_message, ui_exec_end = lines[3], lines[10]  # UI echoes: no event depends on them
    damaged = [*lines[:3], "", ui_message[:60], *lines[4:10], ui_exec_end * 2, *lines[11:]]
    path = tmp_path / "rollout.jsonl"
    path.write_text("\n".join(damaged) + "\n")
    report, plain = audit(path), audit(CODEX)
    assert report.reader.lines == len(damaged)
    assert report.reader.corrupt_lines == 2
    assert report.reader.corrupt_examples[0].startswith("rollout.jsonl:5:")
    assert [damaged[e.line - 1] for e in report.timeline] == [
        lines[e.line - 1] for e in plain.timeline
    ]


def test_codex_blank_line_and_two_records_on_one_line_move_no_event(tmp_path: Path) -> None:
    """The block holds as many records as lines here, yet its lines do not map one to one."""
    lines = CODEX.read_text().splitlines()
    damaged = [*lines[:3], "", *lines[3:10], lines[10] * 2, *lines[11:]]
    path = tmp_path / "rollout.jsonl"
    path.write_text("\n".join(damaged) + "\n")
    report, plain = audit(path), audit(CODEX)
    assert report.reader.corrupt_lines == 1
    assert report.reader.corrupt_examples[0].startswith("rollout.jsonl:12:")
    assert [damaged[e.line - 1] for e in report.timeline] == [
        lines[e.line - 1] for e in plain.timeline
    ]


def test_codex_lines_outside_the_decoders_union_are_read_and_counted_as_before(
    tmp_path: Path,
) -> None:
    """Lines are decoded into a tagged union of the record types the reader knows; a line it does
    not take (a new event type, a new record type, a known type with a mistyped field the audit
    reads) is decoded again as a general item: unknown types are reported, a mistyped record is
    corrupt. A mistyped field the audit does not read is skipped unchecked, like any field it
    does not read (line 6: ``role`` of a token count)."""
    lines = CODEX.read_text().splitlines()
    extra = [
        '{"timestamp":"2026-11-21T09:00:09.000Z","type":"event_msg",'
        '"payload":{"type":"hologram_started","id":"h1"}}',
        '{"timestamp":"2026-11-21T09:00:09.000Z","type":"future_record","payload":{"x":1}}',
        '{"timestamp":"2026-11-21T09:00:09.000Z","type":"event_msg",'
        '"payload":{"type":"token_count","info":5}}',
        '{"timestamp":"2026-11-21T09:00:09.000Z","type":"event_msg",'
        '"payload":{"type":"token_count","role":5}}',
        '{"timestamp":"2026-11-21T09:00:09.000Z","type":"world_state","payload":{"role":5}}',
    ]
    path = tmp_path / "rollout.jsonl"
    path.write_text("\n".join([*lines[:2], *extra, *lines[2:]]) + "\n")
    report, plain = audit(path), audit(CODEX)
    assert report.reader.unknown_record_types == {
        **plain.reader.unknown_record_types,
        "codex:event_msg:hologram_started": 1,
        "codex:future_record": 1,
    }
    assert report.reader.corrupt_lines == 1
    assert report.reader.corrupt_examples[0].startswith(f"{path.name}:5:")
    assert report.reader.skipped_lines == plain.reader.skipped_lines + 1
    assert kinds(report) == kinds(plain)
