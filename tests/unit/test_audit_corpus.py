"""The audit's counted facts on transcripts published by other projects as test data, against
facts computed by an independent script (tests/fixtures/corpus/expected.py; sources, commits and
licences in tests/fixtures/corpus/SOURCES.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from framework.audit.audit import resolve, run_audit
from framework.audit.events import EventKind
from framework.config import Settings

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
TOOL_KINDS = {EventKind.TOOL_CALL, EventKind.SHELL_COMMAND, EventKind.FILE_EDIT}


def test_expected_facts_are_those_the_independent_script_computes() -> None:
    done = subprocess.run(
        [sys.executable, str(CORPUS / "expected.py")], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_counted_fact_matches_the_independent_computation(name: str) -> None:
    expected = EXPECTED[name]
    report = run_audit(resolve(str(CORPUS / name)), Settings(), CORPUS)
    assert report.reader.corrupt_lines == 0 and not report.reader.unreadable
    assert report.reader.session_ids == expected["session_ids"]
    assert report.session_id == expected["session_ids"][0]
    assert report.reader.cli_versions == expected["cli_versions"]
    assert report.reader.cwds == expected["cwds"]
    assert sorted(m.model for m in report.summary.models) == expected["models"]
    tokens = {
        "input": sum(m.input_tokens for m in report.summary.models),
        "output": sum(m.output_tokens for m in report.summary.models),
        "cache_read": sum(m.cache_read_tokens for m in report.summary.models),
        "cache_write": sum(m.cache_write_tokens for m in report.summary.models),
    }
    assert tokens == expected["tokens"]
    # one tool call can be several events (an apply_patch of several files): count call ids
    calls = {(e.call_id or e.index) for e in report.timeline if e.kind in TOOL_KINDS}
    assert report.timeline_omitted == 0 and len(calls) == expected["tool_calls"]
    if "prompts" in expected:  # the Codex source redacted the text that tells prompts apart
        assert report.summary.prompts == expected["prompts"]
