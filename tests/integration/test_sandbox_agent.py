"""A real agent CLI (Claude Code) runs headless and as non-root in the bubblewrap sandbox, reaches
only the scripted model server on the host loopback, edits the workspace, and its transcript lands
in the session store. This is the path the demo takes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from framework.config import SandboxSettings, Settings
from framework.ledger import open_ledger
from framework.sandbox.launch import LaunchRequest, launch
from framework.sandbox.store import SessionStore
from framework.testing.clients import claude_env
from framework.testing.script import parse_script
from framework.testing.server import ScriptedModelServer
from tests.support import require_binary, require_bwrap, unavailable

pytestmark = [pytest.mark.bwrap, pytest.mark.agent_cli, pytest.mark.slow]


def test_claude_code_runs_yolo_as_non_root_and_its_transcript_is_stored(tmp_path: Path) -> None:
    require_bwrap()
    claude = require_binary("claude", "Claude Code CLI")
    if not Path(claude).resolve().is_relative_to("/usr"):
        unavailable("Claude Code CLI", f"{claude} is outside /usr, the only host tree bwrap mounts")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    script = parse_script(
        {
            "turns": [
                {
                    "text": "Writing the experiment.",
                    "actions": [
                        {
                            "write": {
                                "path": "exp.py",
                                "content": "import os\nprint('uid0' if os.getuid() == 0 else 'non-root')\n",
                            }
                        },
                        {"bash": "python3 exp.py"},
                    ],
                },
                {"expect": {"tool_result_contains": ["non-root"]}, "text": "Done."},
            ]
        }
    )
    settings = Settings(
        state_dir=tmp_path / "state", sandbox=SandboxSettings(runtime="bwrap", network="allowlist")
    )
    with ScriptedModelServer(script) as server:
        record = launch(
            LaunchRequest(
                workspace=workspace,
                tool="claude",
                prompt="run the experiment",
                yolo=True,
                extra_env=claude_env(server.url),
                model_endpoint=server.url,
                settings=settings,
                broker=False,
                capture_output=True,
            )
        )
        assert server.failures == []
        assert server.turns_served == 2
    session_dir = SessionStore(tmp_path / "state" / "sessions").path(record.id)
    assert record.exit_code == 0, (session_dir / "stderr.txt").read_text()[-2000:]
    assert (workspace / "exp.py").exists()
    assert (workspace / "CLAUDE.md").exists(), "the methodology was rendered for the tool"
    assert record.tool_version and "Claude Code" in record.tool_version
    assert len(record.transcripts) == 1 and record.transcripts[0].endswith(".jsonl")
    transcript = session_dir / record.transcripts[0]
    events = [json.loads(line) for line in transcript.read_text().splitlines() if line.strip()]
    assert any(e.get("type") == "assistant" for e in events)
    stored = json.loads((session_dir / "session.json").read_text())
    assert stored["exit_code"] == 0 and stored["tool"] == "claude"
    with open_ledger(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}") as ledger:
        kinds = [e.kind.value for e in ledger.events(session_id=record.id)]
    assert kinds == ["session_started", "session_ended"]
