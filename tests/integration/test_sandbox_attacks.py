"""Properties 1-10 of the sandbox, each attacked from inside a real bubblewrap and Docker sandbox.

Every test launches through :func:`framework.sandbox.launch.launch` (the path users take), runs a
small Python attack inside, and asserts on what the attack saw and on the host afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from framework.config import ResearchSettings, SandboxSettings, Settings
from framework.sandbox.launch import LaunchRequest, launch
from framework.sandbox.runtime import SandboxError
from framework.sandbox.store import SessionRecord, SessionStore
from tests.support import require_bwrap, require_docker, unavailable

IMAGE = os.environ.get("AR_TEST_IMAGE", "agentic-researcher:latest")
PROTECTED = ["eval/", "tests/data/", ".git/hooks/", ".git/config"]

pytestmark = pytest.mark.slow


@pytest.fixture(
    params=[
        pytest.param("bwrap", marks=pytest.mark.bwrap),
        pytest.param("docker", marks=pytest.mark.docker),
    ]
)
def runtime(request: pytest.FixtureRequest) -> str:
    if request.param == "bwrap":
        require_bwrap()
    else:
        client = require_docker()
        try:
            client.images.get(IMAGE)
        except Exception as exc:
            unavailable("docker image", f"{IMAGE}: {exc} (run .ci/components/15-docker.sh)")
    return str(request.param)


@pytest.fixture
def workspace(tmp_path: Path, runtime: str) -> Path:
    ws = tmp_path / "ws"
    (ws / "eval").mkdir(parents=True)
    (ws / "eval" / "score.py").write_text("print('honest score')\n")
    (ws / "tests" / "data").mkdir(parents=True)
    (ws / "tests" / "data" / "labels.csv").write_text("id,label\n1,0\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / ".git" / "hooks").mkdir(exist_ok=True)
    if runtime == "docker" and os.getuid() == 0:
        # Containers do not remap uids: the agent (uid 1000) must own the workspace, as a user's would.
        subprocess.run(["chown", "-R", "1000:1000", str(ws)], check=True)
    return ws


def _settings(tmp_path: Path, runtime: str, **sandbox: object) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        sandbox=SandboxSettings(runtime=runtime, image=IMAGE, **sandbox),  # type: ignore[arg-type]
        research=ResearchSettings(protected_paths=PROTECTED),
    )


def attack(
    tmp_path: Path,
    workspace: Path,
    runtime: str,
    code: str,
    *,
    egress_hosts: dict[str, str] | None = None,
    model_endpoint: str | None = None,
    **sandbox: object,
) -> tuple[SessionRecord, dict]:
    """Run ``code`` (Python; it must print one JSON object last) in the sandbox."""
    sandbox.setdefault("network", "none")
    request = LaunchRequest(
        workspace=workspace,
        runtime=runtime,  # type: ignore[arg-type]
        command=["python3", "-c", textwrap.dedent(code)],
        settings=_settings(tmp_path, runtime, **sandbox),
        broker=False,
        record_in_ledger=False,
        capture_output=True,
        model_endpoint=model_endpoint,
    )
    record = launch(request, egress_hosts=egress_hosts)
    session_dir = SessionStore(tmp_path / "state" / "sessions").path(record.id)
    stdout = (session_dir / "stdout.txt").read_text()
    stderr = (session_dir / "stderr.txt").read_text()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"attack printed no result (exit {record.exit_code}):\n{stdout}\n{stderr}"
    return record, json.loads(lines[-1])


TRY_OPEN = """
import json, os
def readable(path):
    try:
        with open(path, 'rb') as fh:
            fh.read(1)
        return True
    except OSError:
        return False
def writable(path, data=b'pwned'):
    try:
        with open(path, 'ab') as fh:
            fh.write(data)
        return True
    except OSError:
        return False
"""


# 1 ------------------------------------------------------------------------------------------


def test_host_home_and_credentials_are_not_visible(
    tmp_path: Path, workspace: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "host-home"
    secrets = {
        ".ssh/id_ed25519": "PRIVATE KEY",
        ".aws/credentials": "aws_secret_access_key=x",
        ".config/gcloud/credentials.db": "gcloud",
        ".netrc": "machine example.org password hunter2",
        ".claude/.credentials.json": "{}",
        ".codex/auth.json": "{}",
        ".gemini/oauth_creds.json": "{}",
    }
    for rel, text in secrets.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    monkeypatch.setenv("HOME", str(home))
    paths = [str(home / rel) for rel in secrets] + ["/root/.bashrc", "/root/.ssh"]
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        TRY_OPEN
        + f"""
paths = {paths!r}
print(json.dumps({{
    "readable": [p for p in paths if readable(p)],
    "exists": [p for p in paths if os.path.exists(p)],
    "home_listing": os.listdir(os.environ["HOME"]),
    "home": os.environ["HOME"],
}}))
""",
    )
    assert seen["readable"] == []
    assert seen["exists"] == []
    assert seen["home"] == "/home/agent"
    assert ".ssh" not in seen["home_listing"] and ".aws" not in seen["home_listing"]


# 2 ------------------------------------------------------------------------------------------


def test_writes_outside_workspace_fail_even_through_planted_symlinks(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target.txt"
    target.write_text("original")
    (workspace / "link-to-file").symlink_to(target)
    (workspace / "link-to-dir").symlink_to(outside)
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        TRY_OPEN
        + f"""
ws = {str(workspace)!r}
attempts = {{
    "via file symlink": ws + "/link-to-file",
    "via dir symlink": ws + "/link-to-dir/new.txt",
    "host path": {str(target)!r},
    "/usr": "/usr/pwned",
    "/etc": "/etc/pwned",
    "/": "/pwned",
}}
print(json.dumps({{
    "written": [k for k, p in attempts.items() if writable(p)],
    "workspace_ok": writable(ws + "/result.txt", b"ok"),
}}))
""",
    )
    assert seen["written"] == []
    assert seen["workspace_ok"] is True, "control: the workspace itself must stay writable"
    assert target.read_text() == "original"
    assert sorted(p.name for p in outside.iterdir()) == ["target.txt"]


# 3 ------------------------------------------------------------------------------------------


def test_protected_paths_are_read_only_inside(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    before = {
        p: (workspace / p).read_bytes()
        for p in ("eval/score.py", "tests/data/labels.csv", ".git/config")
    }
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        TRY_OPEN
        + f"""
import shutil
ws = {str(workspace)!r}
targets = ["eval/score.py", "eval/new.py", "tests/data/labels.csv", "tests/data/extra.csv",
           ".git/hooks/pre-commit", ".git/config"]
written = [t for t in targets if writable(ws + "/" + t)]
def removed(path):
    try:
        os.rename(ws + "/" + path, ws + "/moved")
        return True
    except OSError:
        return False
print(json.dumps({{"written": written, "renamed": [p for p in ("eval", "eval/score.py", ".git/hooks") if removed(p)]}}))
""",
    )
    assert seen["written"] == []
    assert seen["renamed"] == []
    for rel, data in before.items():
        assert (workspace / rel).read_bytes() == data
    assert not (workspace / ".git" / "hooks" / "pre-commit").exists()


def test_launch_refuses_a_protected_path_replaced_by_a_symlink(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    shutil.rmtree(workspace / "eval")
    (workspace / "eval").symlink_to(tmp_path)
    with pytest.raises(SandboxError, match="is a symlink"):
        attack(tmp_path, workspace, runtime, "print('{}')")


# 4 ------------------------------------------------------------------------------------------


def test_no_docker_socket_no_host_processes_no_ptrace(
    tmp_path: Path, workspace: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AR_PLANTED_SECRET", "launcher-secret-4242")
    host_pid = os.getpid()
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        TRY_OPEN
        + f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16
def signalable(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
cmdlines = []
for pid in pids:
    try:
        cmdlines.append(open(f'/proc/{{pid}}/cmdline', 'rb').read().decode(errors='replace'))
    except OSError:
        pass
environ = b''
try:
    environ = open('/proc/1/environ', 'rb').read()
except OSError:
    pass
print(json.dumps({{
    "sockets": [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock") if os.path.exists(p)],
    "host_pid_signalable": signalable({host_pid}),
    "ptrace_host_pid": libc.ptrace(PTRACE_ATTACH, {host_pid}, 0, 0),
    "host_pid_listed": {host_pid} in pids,
    "max_pid_count": len(pids),
    "secret_in_pid1_environ": b"launcher-secret-4242" in environ,
}}))
""",
    )
    assert seen["sockets"] == []
    assert seen["host_pid_signalable"] is False
    assert seen["ptrace_host_pid"] == -1
    assert seen["host_pid_listed"] is False
    assert seen["max_pid_count"] < 10, "only the sandbox's own few processes are visible"
    assert seen["secret_in_pid1_environ"] is False


# 5 ------------------------------------------------------------------------------------------


def test_no_new_privileges_and_no_capabilities(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        """
import json, os
status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines() if ':' in line)
print(json.dumps({
    "uid": os.getuid(),
    "no_new_privs": status['NoNewPrivs'].strip(),
    "caps": {k: status[k].strip() for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')},
}))
""",
    )
    assert seen["uid"] != 0
    assert seen["no_new_privs"] == "1"
    assert set(seen["caps"].values()) == {"0000000000000000"}, seen["caps"]


def test_setuid_root_binary_does_not_elevate(tmp_path: Path, workspace: Path, runtime: str) -> None:
    if os.getuid() != 0:
        unavailable("root", "planting a root-owned setuid binary needs a root launcher")
    suid = workspace / "suid-python"
    shutil.copy2("/usr/bin/python3", suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        f"""
import json, os, subprocess
run = subprocess.run([{str(suid)!r}, '-c', 'import os; print(os.geteuid())'], capture_output=True, text=True)
print(json.dumps({{"uid": os.getuid(), "euid_of_setuid_child": run.stdout.strip(), "err": run.stderr[-300:]}}))
""",
    )
    assert seen["euid_of_setuid_child"] == str(seen["uid"]), seen
    assert seen["euid_of_setuid_child"] != "0"


# 6 ------------------------------------------------------------------------------------------

TIOCSTI_CHILD = """
import json, os, select, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from framework.config import Settings
from framework.sandbox.launch import LaunchRequest, launch
from framework.sandbox.runtime import Stdio
settings = Settings.model_validate_json({settings!r})
code = '''
import fcntl, json, termios
results = []
for ch in b"touch /tmp/ar-tiocsti-pwned\\\\n":
    try:
        fcntl.ioctl(0, termios.TIOCSTI, bytes([ch]))
        results.append("ok")
    except OSError as exc:
        results.append(exc.errno)
print(json.dumps(results))
'''
launch(LaunchRequest(workspace=Path({ws!r}), command=["python3", "-c", code], settings=settings,
       broker=False, record_in_ledger=False, capture_output=True), stdio=Stdio(stdin=0, capture=True))
ready, _, _ = select.select([0], [], [], 0.5)
injected = os.read(0, 1024) if ready else b""
print("RESULT" + json.dumps({{"injected": injected.decode(errors="replace")}}), flush=True)
"""


def test_tiocsti_cannot_inject_into_the_launchers_terminal(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    import pty

    settings = _settings(tmp_path, runtime, network="none")
    script = TIOCSTI_CHILD.format(
        repo=str(Path(__file__).resolve().parents[2]),
        settings=settings.model_dump_json(),
        ws=str(workspace),
    )
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", script])
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert "RESULT" in text, text
    result = json.loads(text.split("RESULT", 1)[1].splitlines()[0])
    assert "touch" not in result["injected"]
    assert not Path("/tmp/ar-tiocsti-pwned").exists()


# 7 ------------------------------------------------------------------------------------------


def test_environment_contains_only_allowlisted_variables(
    tmp_path: Path, workspace: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-aws-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "planted-github-token")
    monkeypatch.setenv("LANG", "C.UTF-8")
    # Credentials reach only the agent that reads them: this is a Claude Code session.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "claude-key-1")
    monkeypatch.setenv("OPENAI_API_KEY", "planted-openai-key")
    monkeypatch.setenv("GEMINI_API_KEY", "planted-gemini-key")
    _, seen = attack(
        tmp_path, workspace, runtime, "import json, os; print(json.dumps(dict(os.environ)))"
    )
    assert "planted-aws-secret" not in json.dumps(seen)
    assert "planted-github-token" not in json.dumps(seen)
    assert "planted-openai-key" not in json.dumps(seen)
    assert "planted-gemini-key" not in json.dumps(seen)
    assert seen.get("ANTHROPIC_API_KEY") == "claude-key-1", "the agent's own key is passed"
    assert seen.get("LANG") == "C.UTF-8", "an allowlisted variable is passed through"
    image_env = {"HOSTNAME", "PWD", "SHLVL", "_"}
    allowed = {
        "HOME",
        "USER",
        "PATH",
        "TERM",
        "LANG",
        "ANTHROPIC_API_KEY",
        "AR_SESSION_ID",
        "DISABLE_AUTOUPDATER",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    } | image_env
    assert set(seen) <= allowed, sorted(set(seen) - allowed)


# 8 ------------------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback_servers() -> Iterator[dict[str, ThreadingHTTPServer]]:
    servers = {}
    for name in ("allowed", "denied", "model"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.hits = []  # type: ignore[attr-defined]
        server.body = f"hello from {name}".encode()  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    yield servers
    for server in servers.values():
        server.shutdown()


NET_PROBE = """
import json, os, socket, urllib.request
def direct(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False
def resolves(name):
    try:
        socket.getaddrinfo(name, 443)
        return True
    except OSError:
        return False
def via_proxy(url):
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except Exception as exc:
        return "error: " + str(getattr(exc, "code", exc))
def connect_tunnel(host, port):
    proxy = os.environ.get("HTTPS_PROXY")
    if not proxy:
        return "no proxy"
    s = socket.create_connection(("127.0.0.1", int(proxy.rsplit(":", 1)[1])), timeout=5)
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n\\r\\n".encode())
    status = s.recv(4096).split(b"\\r\\n")[0].decode()
    if " 200 " not in status:
        return status
    s.sendall(f"GET /tunnel HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data.decode().split("\\r\\n\\r\\n", 1)[-1]
"""


def test_network_none_blocks_everything_including_dns(
    tmp_path: Path, workspace: Path, runtime: str, loopback_servers: dict
) -> None:
    port = loopback_servers["allowed"].server_address[1]
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        NET_PROBE
        + f"""
print(json.dumps({{"direct": direct({port}), "dns": resolves("localhost.localdomain") or resolves("example.com"),
    "proxy": os.environ.get("HTTPS_PROXY")}}))
""",
        network="none",
    )
    assert seen == {"direct": False, "dns": False, "proxy": None}
    assert loopback_servers["allowed"].hits == []


def test_network_allowlist_reaches_only_listed_domains_through_the_proxy(
    tmp_path: Path, workspace: Path, runtime: str, loopback_servers: dict
) -> None:
    allowed = loopback_servers["allowed"].server_address[1]
    denied = loopback_servers["denied"].server_address[1]
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        NET_PROBE
        + f"""
print(json.dumps({{
    "http_allowed": via_proxy("http://allowed.test:{allowed}/plain"),
    "http_denied": via_proxy("http://denied.test:{denied}/plain"),
    "connect_allowed": connect_tunnel("allowed.test", {allowed}),
    "connect_denied": connect_tunnel("denied.test", {denied}),
    "connect_ip_literal": connect_tunnel("127.0.0.1", {denied}),
    "direct_denied": direct({denied}),
    "dns_other": resolves("example.com"),
    "dns_allowed": resolves("allowed.test"),
}}))
""",
        network="allowlist",
        network_allowlist=["allowed.test"],
        network_ports=[allowed, denied],
        egress_hosts={"allowed.test": "127.0.0.1", "denied.test": "127.0.0.1"},
    )
    assert seen["http_allowed"] == "hello from allowed"
    assert seen["connect_allowed"] == "hello from allowed"
    assert seen["http_denied"] == "error: 403"
    assert "403" in seen["connect_denied"]
    assert "403" in seen["connect_ip_literal"]
    assert seen["direct_denied"] is False
    assert seen["dns_other"] is False and seen["dns_allowed"] is False
    assert loopback_servers["denied"].hits == []
    assert sorted(loopback_servers["allowed"].hits) == ["/plain", "/tunnel"]


def test_proxy_lets_an_allowlisted_host_through_on_allowed_ports_only(
    tmp_path: Path, workspace: Path, runtime: str, loopback_servers: dict
) -> None:
    """``CONNECT allowed-host:<any port>`` used to pass: an allowlisted name reached every service
    it runs. By default only 443 is let through; other ports must be listed in the settings."""
    port = loopback_servers["allowed"].server_address[1]
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        NET_PROBE
        + f"""
print(json.dumps({{
    "connect": connect_tunnel("allowed.test", {port}),
    "http": via_proxy("http://allowed.test:{port}/plain"),
}}))
""",
        network="allowlist",
        network_allowlist=["allowed.test"],
        egress_hosts={"allowed.test": "127.0.0.1"},
    )
    assert "403" in seen["connect"]
    assert seen["http"] == "error: 403"
    assert loopback_servers["allowed"].hits == []


def test_network_allowlist_bridges_exactly_the_model_endpoint(
    tmp_path: Path, workspace: Path, runtime: str, loopback_servers: dict
) -> None:
    model = loopback_servers["model"].server_address[1]
    other = loopback_servers["denied"].server_address[1]
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        NET_PROBE
        + f"""
print(json.dumps({{"model": via_proxy("http://127.0.0.1:{model}/v1/messages"), "other": direct({other})}}))
""",
        network="allowlist",
        model_endpoint=f"http://127.0.0.1:{model}",
    )
    assert seen == {"model": "hello from model", "other": False}
    assert loopback_servers["model"].hits == ["/v1/messages"]


def test_network_open_is_explicit_and_warned_about(
    tmp_path: Path,
    workspace: Path,
    runtime: str,
    loopback_servers: dict,
    capfd: pytest.CaptureFixture[str],
) -> None:
    port = loopback_servers["allowed"].server_address[1]
    record, seen = attack(
        tmp_path,
        workspace,
        runtime,
        NET_PROBE + f"print(json.dumps({{'direct': direct({port})}}))",
        network="open",
    )
    assert seen == {"direct": True}
    assert "network 'open'" in capfd.readouterr().err
    assert any("open" in note for note in record.notes)


# 9 ------------------------------------------------------------------------------------------


def test_fork_bomb_is_contained_by_the_pids_limit(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    _record, seen = attack(
        tmp_path,
        workspace,
        runtime,
        """
import json, os, time
children = 0
error = None
while children < 5000:
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc.errno
        break
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    children += 1
print(json.dumps({"children": children, "error": error}))
""",
        pids_limit=64,
    )
    assert seen["error"] is not None, "fork must fail at the limit"
    assert seen["children"] < 64
    assert _host_processes_with("time.sleep(300)") == []


# 10 -----------------------------------------------------------------------------------------


def _host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_every_process_ends_with_the_session(tmp_path: Path, workspace: Path, runtime: str) -> None:
    marker = f"{os.getpid() % 1000}4{len(str(tmp_path))}7"
    _, seen = attack(
        tmp_path,
        workspace,
        runtime,
        f"""
import json, os, subprocess
subprocess.Popen(["sh", "-c", "nohup sleep {marker}1 >/dev/null 2>&1 &"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{marker}2"])
    os._exit(0)
import time; time.sleep(0.3)
print(json.dumps({{"started": True}}))
""",
    )
    assert seen["started"]
    assert _host_processes_with(f"{marker}1") == []
    assert _host_processes_with(f"{marker}2") == []


# The one sanctioned way out: the experiment broker ---------------------------------------------


def test_broker_client_reaches_the_host_broker_from_inside(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    request = LaunchRequest(
        workspace=workspace,
        runtime=runtime,  # type: ignore[arg-type]
        command=["sh", "-c", "command -v remote-run && remote-run ping"],
        settings=_settings(tmp_path, runtime, network="none"),
        broker=True,
        record_in_ledger=False,
        capture_output=True,
    )
    record = launch(request)
    session_dir = SessionStore(tmp_path / "state" / "sessions").path(record.id)
    output = (session_dir / "stdout.txt").read_text() + (session_dir / "stderr.txt").read_text()
    assert record.exit_code == 0, output
    assert output.startswith("/opt/agentic-researcher/bin/remote-run")
