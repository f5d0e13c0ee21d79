"""The channel between the sandbox and the host (issue 16, items 7 and 10), attacked for real.

The agent must not be able to put a broker of its own where the host looks for the real one; the
host must print nothing the agent or a job wrote with its control characters live; and the broker
must answer any bytes sent to its socket without a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framework.cli import app
from framework.config import SandboxSettings, Settings
from framework.dispatch.broker import BrokerHandle, DispatchPaths, start_broker
from framework.dispatch.client import call
from framework.sandbox.launch import LaunchRequest, launch
from framework.sandbox.store import SessionStore
from tests.integration.test_dispatch_broker import make_settings, make_workspace
from tests.integration.test_sandbox_attacks import IMAGE, runtime, workspace

__all__ = ["runtime", "workspace"]  # fixtures, shared with the sandbox attacks

pytestmark = pytest.mark.slow

REPLACE_THE_SOCKET = """
import errno, json, os, socket, subprocess

sock = os.environ["REMOTE_RUN_SOCKET"]
folder = os.path.dirname(sock)

def attempt(action):
    try:
        action()
        return "done"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def serve_own(path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)

print(json.dumps({
    "rename": attempt(lambda: os.rename(sock, sock + ".real")),
    "unlink": attempt(lambda: os.unlink(sock)),
    "chmod": attempt(lambda: os.chmod(sock, 0)),
    "serve_beside": attempt(lambda: serve_own(os.path.join(folder, "evil.sock"))),
    "write_beside": attempt(lambda: open(os.path.join(folder, "x"), "w").close()),
    "host_channel_visible": os.path.exists(HOST_CHANNEL),
    "ping": subprocess.run(["remote-run", "ping"], capture_output=True, text=True).stdout,
}))
"""


def test_agent_cannot_rename_replace_or_shadow_the_broker_socket(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    """The channel directory used to be mounted read-write: the agent renamed ``broker.sock`` and
    served its own, and the host's ``jobs list`` showed its forged runs. Now the socket alone is
    mounted, read-only, in a directory the agent cannot write."""
    state = tmp_path / "state"
    host_channel = DispatchPaths(state).channel
    code = f"HOST_CHANNEL = {str(host_channel)!r}\n" + textwrap.dedent(REPLACE_THE_SOCKET)
    record = launch(
        LaunchRequest(
            workspace=workspace,
            runtime=runtime,  # type: ignore[arg-type]
            command=["python3", "-c", code],
            settings=Settings(
                state_dir=state,
                sandbox=SandboxSettings(runtime=runtime, image=IMAGE, network="none"),  # type: ignore[arg-type]
            ),
            broker=True,
            record_in_ledger=False,
            capture_output=True,
        )
    )
    session_dir = SessionStore(state / "sessions").path(record.id)
    stdout = (session_dir / "stdout.txt").read_text()
    assert record.exit_code == 0, stdout + (session_dir / "stderr.txt").read_text()
    seen = json.loads(stdout.strip().splitlines()[-1])
    for attempt in ("rename", "unlink", "chmod", "serve_beside", "write_beside"):
        assert seen[attempt] in ("EROFS", "EACCES", "EBUSY", "EPERM"), (attempt, seen)
    assert seen["host_channel_visible"] is False
    assert seen["ping"].strip() == "ok"
    # Nothing the agent made is left where host-side clients look for the broker.
    assert sorted(os.listdir(host_channel)) == []
    assert (host_channel.stat().st_mode & 0o777) == 0o700


# --- what the host prints -------------------------------------------------------------------

FORGED = "\x1b[2J\x1b[H\x1b]0;pwned\x07\x9b31m\u202eevil"
"""Clear the screen, home the cursor, retitle the window, a C1 CSI and a right-to-left override."""

JOB = f"""
import json, os
print({FORGED!r} + " finished", flush=True)
json.dump({{"loss\\x1b[8m": {FORGED!r}}}, open(os.environ["METRICS_FILE"], "w"))
"""


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BrokerHandle]:
    workspace = make_workspace(tmp_path)
    state = tmp_path / "state"
    monkeypatch.setenv("AR_STATE_DIR", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("COLUMNS", "400")  # no folding inside the escapes being looked for
    monkeypatch.delenv("AR_CLUSTER__EXECUTOR", raising=False)
    handle = start_broker(workspace, make_settings(workspace, state), "s-channel")
    yield handle
    handle.stop()


@pytest.mark.bwrap
def test_host_prints_what_the_agent_and_its_jobs_wrote_with_control_characters_escaped(
    broker: BrokerHandle,
) -> None:
    """A run's argv, its output and its metrics carry escape sequences; ``jobs list``, ``jobs
    status``, ``jobs logs``, ``ledger list`` and ``ledger show`` print them as visible escapes."""
    sock = broker.env["REMOTE_RUN_SOCKET"]
    request = {"argv": ["python3", "-c", JOB, FORGED], "cwd": str(broker.broker.workspace)}
    answer = call({"op": "submit", "request": request}, sock)
    assert answer["ok"], answer
    (run_id,) = answer["runs"]
    (run,) = call({"op": "wait", "run": run_id, "timeout_s": 120}, sock)["runs"]
    assert run["state"] == "finished", run
    runner = CliRunner()
    ws = ["--workspace", str(broker.broker.workspace)]
    outputs = {}
    for command in (
        ["jobs", "list"],
        ["jobs", "status", run_id],
        ["jobs", "logs", run_id],
        ["ledger", "list"],
        ["ledger", "show", run_id],
    ):
        result = runner.invoke(app, [*command, *ws], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs[" ".join(command[:2])] = result.output
    for command, output in outputs.items():
        live = [c for c in ("\x1b", "\x07", "\x9b", "\u202e") if c in output]
        assert live == [], (command, live)
    assert "\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07\\x9b31m\\u202eevil finished" in outputs["jobs logs"]
    assert "\\x1b[2J" in outputs["jobs list"] and "\\x1b[2J" in outputs["jobs status"]
    assert "loss\\x1b[8m" in outputs["ledger list"] and "\\x1b]0;pwned" in outputs["ledger show"]


# --- the broker's decoding ------------------------------------------------------------------

MALFORMED: list[bytes] = [
    b"[" * 200_000,
    b"{" * 200_000,
    b'{"a":' * 50_000,
    b"[" * 17 + b"]" * 17,
    b'{"op": "ping", "x": ' + b"[" * 20 + b"]" * 20 + b"}",
    b"\xff\xfe\x00[\x00",
    '{"op": "ping"}'.encode("utf-16"),
    b'{"op": "ping", "n": NaN}',
    b'{"op": "ping", "n": Infinity}',
    b'{"op": "list", "limit": ' + b"9" * 5000 + b"}",
    b'{"op": "list", "limit": 1e999}',
    b'"' + b"\\u" * 1000 + b'"',
    b'"\\ud800"',
    b"\x00" * 1000,
    b"",
    b"null",
    b"[]",
    b'{"op": ["ping"]}',
    b'{"op": "submit", "request": {"argv": [' + b"[" * 30 + b"]" * 30 + b"]}}",
    b'{"op": "submit", "request": {"argv": ["x"], "cwd": "' + b"a" * 300_000 + b'"}}',
    b'{"op": "logs", "run": "\\u0000", "rank": -1}',
    b'{"op": "wait", "run": "x", "timeout_s": -1e308}',
    b"\n",
]


def _ask(path: str, raw: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(path)
        conn.sendall(raw)
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return json.loads(data)


@pytest.mark.bwrap
def test_broker_answers_any_bytes_on_its_socket_and_keeps_serving(
    broker: BrokerHandle, capfd: pytest.CaptureFixture[str]
) -> None:
    """200 KB of nested ``[`` used to raise an uncaught RecursionError in the broker's thread (a
    traceback and no answer). Every malformed request now gets a refusal, nothing is printed,
    and the broker serves the next request."""
    sock = broker.env["REMOTE_RUN_SOCKET"]
    for raw in MALFORMED:
        answer = _ask(sock, raw)
        assert answer["ok"] is False, (raw[:60], answer)
        assert "failed on this request" not in answer["error"], (raw[:60], answer)
    assert _ask(sock, b'{"op": "ping"}\n')["ok"] is True
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out
    assert not broker.broker.paths.errors_log.exists()
