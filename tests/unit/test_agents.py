"""Agent profiles: the argv each CLI gets, and where its state and transcripts live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from framework.agents import AGENTS, AgentInvocation, get_agent
from tests.support import REPO_ROOT


def test_claude_headless_yolo_resume_and_model() -> None:
    claude = get_agent("claude")
    how = AgentInvocation(prompt="go", yolo=True, resume="s-1", model="opus")
    assert claude.argv(how) == [
        "claude", "--model", "opus", "--dangerously-skip-permissions", "--resume", "s-1",
        "-p", "go", "--output-format", "stream-json", "--verbose",
    ]  # fmt: skip
    assert claude.argv(AgentInvocation(continue_last=True)) == ["claude", "--continue"]
    assert claude.state_paths == (".claude", ".claude.json")
    assert claude.instruction_files == ("CLAUDE.md",)


def test_codex_uses_exec_for_headless_and_resume_subcommands() -> None:
    codex = get_agent("codex")
    assert codex.argv(AgentInvocation(prompt="go", yolo=True)) == [
        "codex", "exec", "--dangerously-bypass-approvals-and-sandbox", "--json", "go",
    ]  # fmt: skip
    assert codex.argv(AgentInvocation(continue_last=True)) == ["codex", "resume", "--last"]
    assert codex.argv(AgentInvocation(prompt="more", resume="r1"))[:4] == [
        "codex", "exec", "resume", "r1",
    ]  # fmt: skip
    assert codex.environment(AgentInvocation())["CODEX_HOME"] == "/home/agent/.codex"


def test_gemini_yolo_trusts_the_sandboxed_workspace_and_resumes_by_id() -> None:
    gemini = get_agent("gemini")
    assert gemini.argv(AgentInvocation(prompt="go", yolo=True, resume="0d1e")) == [
        "gemini", "--yolo", "--skip-trust", "--resume", "0d1e",
        "--prompt", "go", "--output-format", "stream-json",
    ]  # fmt: skip
    assert gemini.argv(AgentInvocation(continue_last=True)) == ["gemini", "--resume", "latest"]


def test_opencode_runs_headless_with_auto_approval_and_stays_offline() -> None:
    opencode = get_agent("opencode")
    assert opencode.argv(AgentInvocation(prompt="go", model="anthropic/x")) == [
        "opencode", "run", "--model", "anthropic/x", "--format", "json", "go",
    ]  # fmt: skip
    assert opencode.argv(AgentInvocation(prompt="go", yolo=True, resume="ses_1")) == [
        "opencode", "run", "--session", "ses_1", "--auto", "--format", "json", "go",
    ]  # fmt: skip
    env = opencode.environment(AgentInvocation(yolo=True))
    for switch in ("AUTOUPDATE", "MODELS_FETCH", "DEFAULT_PLUGINS", "LSP_DOWNLOAD"):
        assert env[f"OPENCODE_DISABLE_{switch}"] == "1"
    assert "OPENCODE_CONFIG_CONTENT" not in env


def test_extra_args_come_last_for_every_agent() -> None:
    for tool in AGENTS:
        argv = get_agent(tool).argv(AgentInvocation(extra_args=["--debug"]))
        assert argv[-1] == "--debug"
        assert argv[0] == get_agent(tool).binary


def test_resume_and_continue_together_are_rejected() -> None:
    with pytest.raises(ValidationError, match="either --resume ID or --continue"):
        AgentInvocation(resume="x", continue_last=True)


def test_unknown_agent_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of claude, codex, gemini, opencode"):
        get_agent("cursor")


def test_prepare_home_creates_state_and_transcripts_ignore_symlinks(tmp_path: Path) -> None:
    claude = get_agent("claude")
    claude.prepare_home(tmp_path)
    assert (tmp_path / ".claude").is_dir()
    assert json.loads((tmp_path / ".claude.json").read_text()) == {}
    project = tmp_path / ".claude" / "projects" / "-srv-ws"
    project.mkdir(parents=True)
    (project / "abc.jsonl").write_text("{}\n")
    (project / "evil.jsonl").symlink_to("/etc/hostname")
    assert claude.transcripts(tmp_path) == [project / "abc.jsonl"]


def test_every_agent_keeps_its_state_under_home_only() -> None:
    for tool in AGENTS:
        profile = get_agent(tool)
        for rel in (*profile.state_paths, *profile.transcript_globs):
            assert not rel.startswith(("/", "..")), f"{tool}: {rel} escapes HOME"


def test_opencode_transcript_is_its_database_with_the_write_ahead_log(tmp_path: Path) -> None:
    # OpenCode 1.18 leaves the session in opencode.db-wal at exit: the database alone is empty.
    opencode = get_agent("opencode")
    data = tmp_path / ".local" / "share" / "opencode"
    data.mkdir(parents=True)
    for name in ("opencode.db", "opencode.db-wal", "opencode.db-shm"):
        (data / name).write_bytes(b"")
    assert opencode.transcripts(tmp_path) == [data / "opencode.db", data / "opencode.db-wal"]


def test_gemini_transcripts_are_its_chat_files_only(tmp_path: Path) -> None:
    gemini = get_agent("gemini")
    project = tmp_path / ".gemini" / "tmp" / "repo"
    (project / "chats").mkdir(parents=True)
    chat = project / "chats" / "session-2026-11-23T12-34-551bb134.jsonl"
    chat.write_text("{}\n")
    (project / "logs.json").write_text("[]\n")
    assert gemini.transcripts(tmp_path) == [chat]


def test_each_agent_gets_only_the_credentials_it_reads_plus_unclaimed_names() -> None:
    from framework.agents import credential_names
    from framework.config import AgentSettings

    allowed = [*AgentSettings().api_key_env, "MY_PROXY_TOKEN"]
    claude = credential_names("claude", allowed)
    assert "ANTHROPIC_API_KEY" in claude and "MY_PROXY_TOKEN" in claude
    assert not {"OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"} & set(claude)
    assert "OPENAI_API_KEY" in credential_names("codex", allowed)
    assert "ANTHROPIC_API_KEY" not in credential_names("codex", allowed)
    assert "GOOGLE_GEMINI_BASE_URL" in credential_names("gemini", allowed)
    # A name the user left out of the settings never passes, whatever the agent reads.
    assert credential_names("claude", ["OPENAI_API_KEY"]) == []


def test_only_transcripts_this_session_created_or_changed_are_copied(tmp_path: Path) -> None:
    from framework.agents import get_agent

    profile = get_agent("claude")
    project = tmp_path / ".claude" / "projects" / "-work-repo"
    project.mkdir(parents=True)
    earlier, resumed = project / "earlier.jsonl", project / "resumed.jsonl"
    earlier.write_text('{"type":"user"}\n')
    resumed.write_text('{"type":"user"}\n')
    before = profile.transcript_state(tmp_path)
    with resumed.open("a") as fh:  # a resumed session appends to its file
        fh.write('{"type":"assistant"}\n')
    new = project / "new.jsonl"
    new.write_text('{"type":"user"}\n')
    assert profile.changed_transcripts(tmp_path, before) == [new, resumed]


def test_opencode_copy_keeps_only_the_sessions_of_this_launch(tmp_path: Path) -> None:
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from framework.agents import get_agent

    sql = (REPO_ROOT / "tests/fixtures/transcripts/real/opencode/write-and-run.sql").read_text()
    profile = get_agent("opencode")
    database = tmp_path / "opencode.db"
    db = sqlite3.connect(database)
    db.executescript(sql)
    db.execute("PRAGMA journal_mode=WAL")
    (updated,) = db.execute("SELECT time_updated FROM session").fetchone()
    db.execute("INSERT INTO message SELECT id || '-x', session_id, 0, 0, data FROM message")
    db.commit()
    assert (tmp_path / "opencode.db-wal").is_file()
    db.close()

    def counts() -> tuple[int, int, int]:
        with sqlite3.connect(database) as check:
            return tuple(  # type: ignore[return-value]
                check.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("session", "message", "part")
            )

    session_time = datetime.fromtimestamp(updated / 1000, UTC)
    profile.prune_copies([database], session_time - timedelta(minutes=1))
    assert counts() == (1, 8, 11), "a session updated during the launch is kept whole"
    assert not (tmp_path / "opencode.db-wal").exists(), "the log is folded into the copy"
    profile.prune_copies([database], session_time + timedelta(minutes=1))
    assert counts() == (0, 0, 0), "a session of an earlier launch is removed from the copy"
