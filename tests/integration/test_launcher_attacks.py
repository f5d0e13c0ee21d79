"""A session plants links in its own home (the per-project agent home in the state dir, which it
writes as HOME) to make the next launch, which prepares that home as the host user (root here),
create files or directories through them. Each test runs two real sessions through
:func:`framework.sandbox.launch.launch` on real bubblewrap and real Docker: the first plants, the
second is the launch under attack."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from framework.config import AgentTool
from framework.sandbox.launch import LaunchRequest, launch
from framework.sandbox.runtime import SandboxError
from framework.sandbox.store import SessionRecord, SessionStore
from tests.integration.test_sandbox_attacks import _settings, runtime, workspace

__all__ = ["runtime", "workspace"]  # fixtures, used by name

pytestmark = pytest.mark.slow


def _session(tmp_path: Path, workspace: Path, runtime: str, tool: AgentTool, code: str) -> dict:
    request = LaunchRequest(
        workspace=workspace,
        tool=tool,
        runtime=runtime,  # type: ignore[arg-type]
        command=["python3", "-c", textwrap.dedent(code)],
        settings=_settings(tmp_path, runtime, network="none"),
        broker=False,
        record_in_ledger=False,
        capture_output=True,
    )
    record: SessionRecord = launch(request)
    out = (SessionStore(tmp_path / "state" / "sessions").path(record.id) / "stdout.txt").read_text()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"the session printed no result (exit {record.exit_code}): {out}"
    return dict(json.loads(lines[-1]))


def _plant(name: str, target: Path) -> str:
    """Session code replacing ``$HOME/name`` with a link to the host path ``target``."""
    return f"""
        import json, os, shutil
        path = os.path.join(os.environ['HOME'], {name!r})
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        os.symlink({str(target)!r}, path)
        print(json.dumps({{'planted': os.path.islink(path)}}))
    """


@pytest.fixture
def host_only(tmp_path: Path) -> Path:
    """A root-only host directory that no sandbox is given."""
    path = tmp_path / "host-only"
    path.mkdir(mode=0o700)
    return path


def test_the_next_launch_never_creates_a_host_file_through_a_link_in_the_agent_home(
    tmp_path: Path, workspace: Path, runtime: str, host_only: Path
) -> None:
    target = host_only / "created-by-the-launcher.json"  # dangling: the launch would create it
    assert _session(tmp_path, workspace, runtime, "claude", _plant(".claude.json", target))[
        "planted"
    ]
    seen = _session(tmp_path, workspace, runtime, "claude", "print('{\"ran\": true}')")
    assert seen["ran"]
    assert not target.exists() and list(host_only.iterdir()) == []


def test_the_next_launch_never_creates_a_host_directory_through_a_link_in_the_agent_home(
    tmp_path: Path, workspace: Path, runtime: str, host_only: Path
) -> None:
    assert _session(tmp_path, workspace, runtime, "opencode", _plant(".config", host_only))[
        "planted"
    ]
    with pytest.raises(SandboxError, match="cannot prepare the agent home"):
        _session(tmp_path, workspace, runtime, "opencode", "print('{}')")
    assert list(host_only.iterdir()) == [], "nothing was made in the host directory"
