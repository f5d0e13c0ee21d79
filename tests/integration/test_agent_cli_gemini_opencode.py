"""The real Gemini CLI and OpenCode run whole sessions against the scripted model server, and the
audit reads the transcripts they write.

Gemini CLI speaks the Gemini API to the server (``GOOGLE_GEMINI_BASE_URL``); OpenCode speaks the
Anthropic Messages API through a custom provider. Both run as an unprivileged user with a fresh
home, outside any sandbox. Set UPDATE_TRANSCRIPT_FIXTURES=1 to copy their transcripts into
tests/fixtures/transcripts/real/ for the reader tests.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework.audit.audit import resolve, run_audit
from framework.audit.events import EventKind
from framework.audit.report import AuditReport
from framework.config import Settings
from framework.testing.clients import opencode_env, run_as, write_gemini_home
from framework.testing.replay import client_environment, replay
from framework.testing.script import load_script
from framework.testing.server import ScriptedModelServer
from tests.support import REPO_ROOT, require_binary, unavailable

pytestmark = pytest.mark.agent_cli

AGENT_USER = os.environ.get("AGENT_CLIS_USER", "ar-agent")
MARKER = "METHODOLOGY-MARKER-7f3a"
METHODOLOGY = f"{MARKER}: record every run in the ledger and never edit eval/.\n"
SCRIPT = REPO_ROOT / "tests" / "fixtures" / "scripts" / "write-and-run.yaml"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "transcripts" / "real"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
FINAL_TEXT = "The experiment printed accuracy 0.75 and wrote metrics.json. Done."
# The tables OpenCode keeps a conversation in; the rest of its database is accounts and caches.
OPENCODE_TABLES = ("project", "session", "message", "part")


def _agent_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(AGENT_USER)
    except KeyError:
        unavailable(
            "agent CLIs",
            f"running as root and user {AGENT_USER!r} is missing: run .ci/components/60-agent-clis.sh",
        )
    return AGENT_USER


@pytest.fixture
def session_dirs() -> Iterator[tuple[Path, Path, str | None]]:
    """A workdir and a home for the agent user, under /tmp so that user can reach them."""
    user = _agent_user()
    work = Path(tempfile.mkdtemp(prefix="ar-cli-work-"))
    home = Path(tempfile.mkdtemp(prefix="ar-cli-home-"))
    yield work, home, user
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


def _give_to(user: str | None, *paths: Path) -> None:
    if user:
        subprocess.run(["chown", "-R", user, *map(str, paths)], check=True)


def _run(user: str | None, argv: list[str], env: dict[str, str], work: Path) -> str:
    done = subprocess.run(
        run_as(user, argv, env),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def _assert_experiment_ran(work: Path) -> None:
    assert (work / "experiment.py").read_text().startswith("import json\n")
    assert json.loads((work / "metrics.json").read_text()) == {"accuracy": 0.75}


def _assert_audit_sees_the_session(report: AuditReport, work: Path) -> None:
    assert report.reader.corrupt_lines == 0
    assert report.reader.unknown_record_types == {}
    assert report.reader.unknown_fields == {}
    edits = [e for e in report.timeline if e.kind == EventKind.FILE_EDIT]
    assert [(e.path, e.op) for e in edits] == [(str(work / "experiment.py"), "write")]
    commands = [e.command for e in report.timeline if e.kind == EventKind.SHELL_COMMAND]
    assert commands == ["python3 experiment.py && echo ran-ok"]
    results = [e.status for e in report.timeline if e.kind == EventKind.TOOL_RESULT]
    assert results == ["ok", "ok"]
    said = [e.text for e in report.timeline if e.kind == EventKind.ASSISTANT]
    assert said[-1] == FINAL_TEXT
    assert sum(e.output_tokens or 0 for e in report.timeline) > 0


def test_gemini_cli_runs_a_scripted_session_and_reads_gemini_md(
    session_dirs: tuple[Path, Path, str | None],
) -> None:
    gemini = require_binary("gemini", "agent CLIs (Gemini CLI)")
    work, home, user = session_dirs
    (work / "GEMINI.md").write_text(METHODOLOGY)
    with ScriptedModelServer(load_script(SCRIPT)) as server:
        env = {"HOME": str(home), "PATH": BASE_PATH, **write_gemini_home(home, server.url)}
        _give_to(user, work, home)
        argv = [
            gemini,
            "-p",
            "Run the experiment.",
            "--yolo",
            "--skip-trust",
            "--output-format",
            "json",
        ]
        stdout = _run(user, argv, env, work)
        server.check()
        requests = server.requests
    _assert_experiment_ran(work)
    assert MARKER in json.dumps(requests[0].body), "GEMINI.md did not reach the model"
    # The pinned model keeps Gemini CLI's router quiet: every request is a script turn, streamed.
    assert [(r.kind, r.stream) for r in requests] == [("main", True)] * 3
    assert all("/models/scripted-model:streamGenerateContent" in r.path for r in requests)
    result = json.loads(stdout[stdout.index("{") :])
    assert result["response"] == FINAL_TEXT
    assert result["stats"]["tools"]["totalSuccess"] == 2
    transcripts = list((home / ".gemini" / "tmp").glob("*/chats/session-*.jsonl"))
    assert len(transcripts) == 1
    _assert_audit_sees_the_session(run_audit(resolve(str(transcripts[0])), Settings(), work), work)
    if os.environ.get("UPDATE_TRANSCRIPT_FIXTURES") == "1":
        shutil.copyfile(transcripts[0], FIXTURES / "gemini" / "write-and-run.jsonl")


def test_opencode_runs_a_scripted_session_and_reads_agents_md(
    session_dirs: tuple[Path, Path, str | None],
) -> None:
    opencode = require_binary("opencode", "agent CLIs (OpenCode)")
    work, home, user = session_dirs
    (work / "AGENTS.md").write_text(METHODOLOGY)
    _give_to(user, work, home)
    with ScriptedModelServer(load_script(SCRIPT)) as server:
        env = {"HOME": str(home), "PATH": BASE_PATH, **opencode_env(server.url)}
        argv = [opencode, "run", "--format", "json", "Run the experiment."]
        stdout = _run(user, argv, env, work)
        server.check()
        main = [r for r in server.requests if r.kind == "main"]
    _assert_experiment_ran(work)
    assert MARKER in json.dumps(main[0].body), "AGENTS.md did not reach the model"
    assert [r.tools_called for r in main] == [["write"], ["bash"], []]
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    tools = [e["part"] for e in events if e["type"] == "tool_use"]
    assert [(t["tool"], t["state"]["status"]) for t in tools] == [
        ("write", "completed"),
        ("bash", "completed"),
    ]
    assert tools[1]["state"]["metadata"]["exit"] == 0
    assert "metric accuracy 0.75" in tools[1]["state"]["output"]
    database = home / ".local" / "share" / "opencode" / "opencode.db"
    _assert_audit_sees_the_session(run_audit(resolve(str(database)), Settings(), work), work)
    if os.environ.get("UPDATE_TRANSCRIPT_FIXTURES") == "1":
        _dump_conversation(database, FIXTURES / "opencode" / "write-and-run.sql")


def _dump_conversation(database: Path, target: Path) -> None:
    """The conversation tables of OpenCode's database as SQL, their schema as OpenCode made it."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        lines = [
            line
            for line in db.iterdump()
            if any(
                line.startswith((f"CREATE TABLE `{t}`", f'INSERT INTO "{t}"'))
                for t in OPENCODE_TABLES
            )
        ]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("tool", ["gemini", "opencode"])
def test_replay_rehearses_a_session_with_the_real_cli(
    tool: str, session_dirs: tuple[Path, Path, str | None]
) -> None:
    """`agentic-researcher replay SCRIPT -- CLI ...` serves the script and gives the CLI what it
    needs to find the server, for Gemini CLI and OpenCode as for Claude Code and Codex."""
    binary = require_binary(tool, f"agent CLIs ({tool})")
    work, home, user = session_dirs
    state = home / "replay-state"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"HOME": str(home), "PATH": BASE_PATH}
    env |= client_environment(f"http://127.0.0.1:{port}", state)
    (work / ("GEMINI.md" if tool == "gemini" else "AGENTS.md")).write_text(METHODOLOGY)
    if tool == "gemini":  # API-key auth chosen in the user's settings, as a Gemini API user has
        write_gemini_home(home, f"http://127.0.0.1:{port}")
    _give_to(user, work, home)
    if tool == "gemini":
        cli = [binary, "-p", "Run the experiment.", "--yolo", "--skip-trust"]
    else:
        cli = [binary, "run", "--auto", "Run the experiment."]
    command = run_as(user, ["env", "-C", str(work), *cli], env)
    result = replay(SCRIPT, command, port=port, state_dir=state)
    assert result.ok, result.lines()
    assert result.turns_served == result.turns_total == 3
    _assert_experiment_ran(work)
