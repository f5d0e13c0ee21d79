"""The real Claude Code and Codex CLIs run whole sessions against the scripted model server.

They run directly (no sandbox) as an unprivileged user with a fresh home: the sandboxed runs are
in test_e2e*. Set UPDATE_TRANSCRIPT_FIXTURES=1 to copy the transcripts they write into
tests/fixtures/transcripts/real/ for the audit tests.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework.testing.clients import claude_env, run_as, write_codex_home
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


def _agent_user() -> str | None:
    """The user to run the CLIs as: ourselves unless we are root."""
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
    """A workdir and a home owned by the agent user, under /tmp so that user can reach them."""
    user = _agent_user()
    work = Path(tempfile.mkdtemp(prefix="ar-cli-work-"))
    home = Path(tempfile.mkdtemp(prefix="ar-cli-home-"))
    yield work, home, user
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


def _give_to(user: str | None, *paths: Path) -> None:
    if user:
        subprocess.run(["chown", "-R", user, *map(str, paths)], check=True)


def _save_fixture(tool: str, transcript: Path) -> None:
    if os.environ.get("UPDATE_TRANSCRIPT_FIXTURES") == "1":
        target = FIXTURES / tool / f"write-and-run{transcript.suffix}"
        shutil.copyfile(transcript, target)


def _assert_experiment_ran(work: Path) -> None:
    assert (work / "experiment.py").read_text().startswith("import json\n")
    assert json.loads((work / "metrics.json").read_text()) == {"accuracy": 0.75}


def test_claude_code_runs_a_scripted_session_and_reads_claude_md(
    session_dirs: tuple[Path, Path, str | None],
) -> None:
    claude = require_binary("claude", "agent CLIs (Claude Code)")
    work, home, user = session_dirs
    (work / "CLAUDE.md").write_text(METHODOLOGY)
    _give_to(user, work, home)
    with ScriptedModelServer(load_script(SCRIPT)) as server:
        env = {"HOME": str(home), "PATH": BASE_PATH, **claude_env(server.url)}
        argv = [
            claude,
            "-p",
            "Run the experiment.",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
        ]
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
        server.check()
        first = next(r for r in server.requests if r.kind == "main")
    _assert_experiment_ran(work)
    assert MARKER in json.dumps(first.body), "CLAUDE.md did not reach the model"
    final = json.loads(done.stdout.strip().splitlines()[-1])
    assert final["type"] == "result" and final["result"].startswith(
        "The experiment printed accuracy 0.75"
    )
    transcripts = list((home / ".claude" / "projects").rglob("*.jsonl"))
    assert len(transcripts) == 1
    entries = [json.loads(line) for line in transcripts[0].read_text().splitlines()]
    tool_uses = [
        b["name"]
        for e in entries
        if e.get("type") == "assistant"
        for b in e["message"]["content"]
        if b.get("type") == "tool_use"
    ]
    assert tool_uses == ["Write", "Bash"]
    _save_fixture("claude", transcripts[0])


def test_codex_runs_a_scripted_session_and_reads_agents_md(
    session_dirs: tuple[Path, Path, str | None],
) -> None:
    codex = require_binary("codex", "agent CLIs (Codex)")
    work, home, user = session_dirs
    (work / "AGENTS.md").write_text(METHODOLOGY)
    with ScriptedModelServer(load_script(SCRIPT)) as server:
        env = {
            "HOME": str(home),
            "PATH": BASE_PATH,
            **write_codex_home(home / ".codex", server.url),
        }
        _give_to(user, work, home)
        argv = [codex, "exec", "--skip-git-repo-check", "--json", "Run the experiment."]
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
        server.check()
        first = next(r for r in server.requests if r.kind == "main")
    _assert_experiment_ran(work)
    assert MARKER in json.dumps(first.body), "AGENTS.md did not reach the model"
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    commands = [
        e["item"]
        for e in events
        if e["type"] == "item.completed" and e["item"]["type"] == "command_execution"
    ]
    assert [c["exit_code"] for c in commands] == [0, 0]
    assert "metric accuracy 0.75" in commands[1]["aggregated_output"]
    transcripts = list((home / ".codex" / "sessions").rglob("rollout-*.jsonl"))
    assert len(transcripts) == 1
    assert "call_scripted_002_0" in transcripts[0].read_text()
    _save_fixture("codex", transcripts[0])
