"""The full sandbox image runs the real agent CLIs: Claude Code, launched headless in Docker as
uid 1000 with only the scripted model server reachable, edits the workspace, runs a command, and
its transcript lands in the session store; the pinned CLIs, Node.js and uv are in the image.

The image is the one CI builds with INSTALL_AGENTS=1 (``.ci/components/15-docker.sh``); the
pins are read from ``container/Dockerfile`` so the image is checked against the file that made it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from framework.config import SandboxSettings, Settings
from framework.ledger import open_ledger
from framework.sandbox.build import apt_mirrors, host_build_args, npm_registry, pip_index_url
from framework.sandbox.launch import LaunchRequest, launch
from framework.sandbox.store import SessionRecord, SessionStore
from framework.testing.clients import claude_env
from framework.testing.script import parse_script
from framework.testing.server import ScriptedModelServer
from tests.support import REPO_ROOT, require_docker, unavailable

IMAGE = os.environ.get("AR_TEST_IMAGE", "agentic-researcher:latest")
AGENT_UID = 1000
PIN_ARGS = {
    "CLAUDE_CODE_VERSION": "@anthropic-ai/claude-code",
    "CODEX_VERSION": "@openai/codex",
    "GEMINI_CLI_VERSION": "@google/gemini-cli",
    "OPENCODE_VERSION": "opencode-ai",
}


def dockerfile_args() -> dict[str, str]:
    text = (REPO_ROOT / "container" / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S*)$", text, flags=re.MULTILINE))


def test_image_pins_the_same_agent_cli_versions_as_the_host_install() -> None:
    """One set of versions: the image and the host CLIs the bwrap tests use must not drift."""
    args = dockerfile_args()
    host_script = (REPO_ROOT / ".ci" / "components" / "60-agent-clis.sh").read_text()
    for arg, package in PIN_ARGS.items():
        assert args.get(arg), f"container/Dockerfile has no pinned {arg}"
        assert f'"{package}@{args[arg]}"' in host_script, (
            f"{package}: Dockerfile pins {args[arg]}, .ci/components/60-agent-clis.sh differs"
        )


def test_build_args_take_mirrors_from_both_apt_formats_and_ignore_disabled_files(
    tmp_path: Path,
) -> None:
    listd = tmp_path / "sources.list.d"
    listd.mkdir()
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb [signed-by=/k.gpg] http://one-line.invalid/debian/ bookworm main\n"
    )
    (listd / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb822.invalid/debian-security\nSuites: bookworm-security\n"
    )
    (listd / "other.sources.disabled").write_text("URIs: http://disabled.invalid/debian\n")
    assert apt_mirrors([tmp_path / "sources.list", listd]) == (
        "http://one-line.invalid/debian",
        "http://deb822.invalid/debian-security",
    )


def test_build_args_pass_only_what_a_build_container_can_use(tmp_path: Path) -> None:
    """A file: index, a URL with credentials or a missing setting leave the tool's default;
    added CAs travel as PEM."""
    ca_dir = tmp_path / "ca"
    (ca_dir / "corp").mkdir(parents=True)
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    (ca_dir / "corp" / "proxy.crt").write_text(pem + "\n")
    (ca_dir / "notes.txt").write_text(pem)
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "PIP_INDEX_URL": "file:///opt/pypi/simple"}
    assert pip_index_url(env) is None
    assert pip_index_url({"PIP_INDEX_URL": "https://pypi.mirror.invalid/simple"}) is not None
    with_password = "https://user:secret@pypi.mirror.invalid/simple"
    assert pip_index_url({"PIP_INDEX_URL": with_password}) is None, "history would keep it"
    (tmp_path / ".npmrc").write_text("cafile=/x.pem\nregistry = https://npm.mirror.invalid/\n")
    assert npm_registry(env) == "https://npm.mirror.invalid/"
    args = host_build_args(env, apt_sources=[tmp_path / "none"], ca_dir=ca_dir)
    assert args == {"NPM_CONFIG_REGISTRY": "https://npm.mirror.invalid/", "EXTRA_CA_CERTS": pem}


@pytest.fixture
def agent_image() -> str:
    """The image, which must carry Claude Code (built with INSTALL_AGENTS=1)."""
    client = require_docker()
    try:
        client.images.get(IMAGE)
    except Exception as exc:
        unavailable("docker image", f"{IMAGE}: {exc} (run .ci/components/15-docker.sh)")
    probe = client.containers.run(
        IMAGE, ["sh", "-c", "command -v claude || true"], remove=True, network_mode="none"
    )
    if not probe.strip():
        unavailable(
            "agent CLIs in the docker image",
            f"{IMAGE} has no claude; rebuild it with the agents: "
            "AR_CI_REBUILD=1 bash .ci/components/15-docker.sh",
        )
    return IMAGE


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    if os.getuid() == 0:
        # Containers do not remap uids: the agent's uid must own the workspace, as a user's would.
        subprocess.run(["chown", "-R", f"{AGENT_UID}:{AGENT_UID}", str(ws)], check=True)
    return ws


def _settings(tmp_path: Path, image: str) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        sandbox=SandboxSettings(runtime="docker", image=image, network="allowlist"),
    )


def _session_dir(tmp_path: Path, record: SessionRecord) -> Path:
    return SessionStore(tmp_path / "state" / "sessions").path(record.id)


@pytest.mark.docker
@pytest.mark.agent_cli
def test_image_carries_the_pinned_agent_clis_node_and_uv(
    tmp_path: Path, workspace: Path, agent_image: str
) -> None:
    args = dockerfile_args()
    record = launch(
        LaunchRequest(
            workspace=workspace,
            command=[
                "sh",
                "-c",
                "set -e; claude --version; codex --version; gemini --version; "
                "opencode --version; node --version; uv --version; id -u",
            ],
            settings=_settings(tmp_path, agent_image),
            network="none",
            broker=False,
            record_in_ledger=False,
            capture_output=True,
        )
    )
    session_dir = _session_dir(tmp_path, record)
    out = (session_dir / "stdout.txt").read_text()
    assert record.exit_code == 0, (session_dir / "stderr.txt").read_text()[-2000:]
    lines = out.split()
    assert f"{args['CLAUDE_CODE_VERSION']}" in out and "Claude Code" in out
    assert args["CODEX_VERSION"] in out and "codex" in out.lower()
    assert args["GEMINI_CLI_VERSION"] in lines
    assert args["OPENCODE_VERSION"] in lines
    assert f"v{args['NODE_VERSION']}" in lines, "Gemini CLI needs the image's Node.js >= 20"
    assert f"uv {args['UV_VERSION']}" in out
    assert lines[-1] == str(AGENT_UID), "the CLIs ran as the agent's uid, not root"


@pytest.mark.docker
@pytest.mark.agent_cli
@pytest.mark.slow
def test_claude_code_in_docker_edits_the_workspace_runs_a_command_and_its_transcript_is_stored(
    tmp_path: Path, workspace: Path, agent_image: str
) -> None:
    script = parse_script(
        {
            "turns": [
                {
                    "text": "Writing the experiment.",
                    "actions": [
                        {
                            "write": {
                                "path": "exp.py",
                                "content": "import os\n"
                                "print('uid', os.getuid(), 'in', open('/etc/hostname').read())\n",
                            }
                        },
                        {"bash": "python3 exp.py | tee result.txt"},
                    ],
                },
                {"expect": {"tool_result_contains": [f"uid {AGENT_UID} in"]}, "text": "Done."},
            ]
        }
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
                settings=_settings(tmp_path, agent_image),
                broker=False,
                capture_output=True,
            )
        )
        assert server.failures == []
        assert server.turns_served == 2
    session_dir = _session_dir(tmp_path, record)
    assert record.exit_code == 0, (session_dir / "stderr.txt").read_text()[-2000:]

    # The agent's edit and its command's output are in the host workspace, owned by the agent uid.
    assert "print('uid', os.getuid()" in (workspace / "exp.py").read_text()
    assert (workspace / "exp.py").stat().st_uid == AGENT_UID
    assert (workspace / "result.txt").read_text().startswith(f"uid {AGENT_UID} in ")
    assert (workspace / "CLAUDE.md").exists(), "the methodology was rendered for the tool"

    # The session record says where and with what it ran.
    assert record.runtime == "docker" and record.network == "allowlist"
    assert record.container_id
    assert record.tool_version and dockerfile_args()["CLAUDE_CODE_VERSION"] in record.tool_version
    stored = json.loads((session_dir / "session.json").read_text())
    assert stored["exit_code"] == 0 and stored["tool"] == "claude"
    stream = [json.loads(x) for x in (session_dir / "stdout.txt").read_text().splitlines() if x]
    assert stream and stream[-1].get("type") == "result"

    # The transcript was copied out of the agent's home and shows the tool call and its result.
    assert len(record.transcripts) == 1 and record.transcripts[0].endswith(".jsonl")
    transcript = (session_dir / record.transcripts[0]).read_text()
    events = [json.loads(line) for line in transcript.splitlines() if line.strip()]
    assert any(e.get("type") == "assistant" for e in events)
    assert "python3 exp.py | tee result.txt" in transcript
    assert f"uid {AGENT_UID} in" in transcript

    with open_ledger(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}") as ledger:
        kinds = [e.kind.value for e in ledger.events(session_id=record.id)]
    assert kinds == ["session_started", "session_ended"]
