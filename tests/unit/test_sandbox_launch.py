"""Launcher logic that needs no real runtime: egress decisions, session store, mounts, requests."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from framework.config import Mount, ResearchSettings, Settings
from framework.sandbox.launch import (
    LaunchRequest,
    _user_mount,
    launch,
    sandbox_ids,
    workspace_mounts,
)
from framework.sandbox.proxy import EgressProxy, host_allowed
from framework.sandbox.runtime import SandboxError, get_runtime
from framework.sandbox.store import SessionError, SessionRecord, SessionStore
from framework.workspace import Workspace


def test_allowlist_matches_exact_names_and_wildcard_subdomains_only() -> None:
    allow = ["api.anthropic.com", "*.example.org"]
    assert host_allowed("api.anthropic.com", allow)
    assert host_allowed("API.Anthropic.com.", allow)
    assert host_allowed("a.b.example.org", allow)
    assert not host_allowed("example.org", allow)
    assert not host_allowed("evil-api.anthropic.com", allow)
    assert not host_allowed("api.anthropic.com.evil.net", allow)
    assert not host_allowed("notexample.org", allow)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


def _ask(sock_path: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(sock_path))
        client.sendall(request)
        data = b""
        while chunk := client.recv(4096):
            data += chunk
    return data


def test_proxy_refuses_unlisted_hosts_and_dns_that_points_inside(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    proxy = EgressProxy(
        allowlist=["ok.test", "localhost"], ports=frozenset({port}), hosts={"ok.test": "127.0.0.1"}
    )
    path = proxy.serve_proxy(tmp_path / "p.sock")
    try:
        ok = _ask(
            path,
            f"GET http://ok.test:{port}/ HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n".encode(),
        )
        assert ok.startswith(b"HTTP/1.0 200") and ok.endswith(b"hello")
        denied = _ask(path, f"CONNECT other.test:{port} HTTP/1.1\r\n\r\n".encode())
        assert denied.startswith(b"HTTP/1.1 403")
        # Allowlisted, but its DNS answer is loopback: refused (no rebinding into the host).
        rebound = _ask(path, f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n".encode())
        assert rebound.startswith(b"HTTP/1.1 502")
        garbage = _ask(path, b"NONSENSE\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400")
        # Allowlisted, but on a port that is not allowed: refused before any connection.
        other_port = _ask(path, f"CONNECT ok.test:{port + 1} HTTP/1.1\r\n\r\n".encode())
        assert other_port.startswith(b"HTTP/1.1 403")
        assert [(d.host, d.allowed) for d in proxy.decisions] == [
            ("ok.test", True),
            ("other.test", False),
            ("localhost", False),
            ("ok.test", False),
        ]
    finally:
        proxy.stop()
        server.shutdown()
    assert not path.exists()


def _record(session_id: str, minute: int) -> SessionRecord:
    return SessionRecord(
        id=session_id,
        tool="claude",
        runtime="bwrap",
        network="none",
        workspace=Path("/ws"),
        started_at=datetime(2026, 11, 23, 9, minute, tzinfo=UTC),
    )


def test_session_store_round_trips_and_lists_in_start_order(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(_record("b", 5))
    store.save(_record("a", 7))
    assert [r.id for r in store.records()] == ["b", "a"]
    assert store.load("a").started_at.minute == 7
    with pytest.raises(SessionError, match="no session 'zzz'"):
        store.load("zzz")
    with pytest.raises(SessionError, match="not a session id"):
        store.path("../etc")


def test_transcript_copy_skips_symlinks_planted_by_the_agent(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "projects").mkdir(parents=True)
    (home / "projects" / "real.jsonl").write_text('{"ok": 1}\n')
    secret = tmp_path / "host-secret"
    secret.write_text("PRIVATE")
    (home / "projects" / "evil.jsonl").symlink_to(secret)
    (home / "linkdir").symlink_to(tmp_path)
    store = SessionStore(tmp_path / "sessions")
    record = _record("s1", 1)
    files = [
        home / "projects" / "real.jsonl",
        home / "projects" / "evil.jsonl",
        home / "linkdir" / "host-secret",
    ]
    copied = store.copy_transcripts(record, home, files)
    assert copied == ["transcripts/projects/real.jsonl"]
    all_copied = [p.read_text() for p in (tmp_path / "sessions").rglob("*") if p.is_file()]
    assert "PRIVATE" not in all_copied


def _workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    settings = Settings(
        state_dir=tmp_path / "state",
        research=ResearchSettings(
            protected_paths=["eval/", ".git/hooks/", ".git/config", "data.csv"]
        ),
    )
    return Workspace(root=root, settings=settings)


def test_workspace_mounts_pin_every_ancestor_and_create_nothing(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    (ws.root / "tests" / "data").mkdir(parents=True)
    ws.settings.research.protected_paths = [*ws.settings.research.protected_paths, "tests/data/"]
    mounts = workspace_mounts(ws)
    assert mounts[0].target == ws.root and not mounts[0].read_only
    by_target = {m.target.relative_to(ws.root).as_posix(): m for m in mounts[1:]}
    assert set(by_target) == {".git", ".git/hooks", ".git/config", "tests", "tests/data"}
    for ancestor in (".git", "tests"):  # a mount point cannot be renamed away (EBUSY)
        mount = by_target[ancestor]
        assert mount.source == mount.target and not mount.read_only
    assert all(by_target[p].read_only for p in (".git/hooks", ".git/config", "tests/data"))
    assert not (ws.root / "eval").exists(), "an absent protected path is not created"
    assert not (ws.root / "data.csv").exists()


def test_workspace_mounts_refuse_a_protected_path_that_is_a_symlink(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    (ws.root / "eval").symlink_to("/")
    with pytest.raises(SandboxError, match=r"protected path .*/eval is a symlink"):
        workspace_mounts(ws)


def test_workspace_mounts_refuse_a_link_in_place_of_a_protected_paths_ancestor(
    tmp_path: Path,
) -> None:
    ws = _workspace(tmp_path)
    (tmp_path / "elsewhere" / "data").mkdir(parents=True)
    (ws.root / "tests").symlink_to(tmp_path / "elsewhere")
    ws.settings.research.protected_paths = ["tests/data/"]
    with pytest.raises(SandboxError, match=r"protected path .*/tests is a symlink"):
        workspace_mounts(ws)


def test_user_mounts_cannot_expose_the_host_home_or_docker_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "data").mkdir(parents=True)
    with pytest.raises(SandboxError, match="exposes the host home"):
        _user_mount(Mount.parse(f"{tmp_path / 'home'}:/data"))
    with pytest.raises(SandboxError, match="exposes the host home"):
        _user_mount(Mount.parse(f"{tmp_path}:/data"))
    with pytest.raises(SandboxError, match="does not exist"):
        _user_mount(Mount.parse("/nonexistent/path"))
    ok = _user_mount(Mount.parse(f"{tmp_path / 'home' / 'data'}:/data:rw"))
    assert ok.target == Path("/data") and not ok.read_only


def test_sandbox_uid_is_never_root(tmp_path: Path) -> None:
    for runtime in ("bwrap", "docker", "podman"):
        uid, gid = sandbox_ids(runtime, tmp_path)
        assert uid != 0 and gid != 0
    if os.getuid() != 0:
        assert sandbox_ids("docker", tmp_path) == (os.getuid(), os.getgid())


def test_launch_request_rejects_bad_endpoints_and_conflicting_resume_flags(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="model_endpoint must look like"):
        LaunchRequest(model_endpoint="127.0.0.1:8080")
    with pytest.raises(ValidationError, match="either --resume ID or --continue"):
        launch(
            LaunchRequest(
                workspace=tmp_path,
                resume="abc",
                continue_last=True,
                settings=Settings(state_dir=tmp_path / "state"),
            )
        )


def test_network_none_with_a_model_endpoint_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    request = LaunchRequest(
        workspace=tmp_path,
        network="none",
        model_endpoint="http://127.0.0.1:9",
        settings=Settings(state_dir=tmp_path / "state"),
    )
    with pytest.raises(SandboxError, match="network 'none' cannot reach a model endpoint"):
        launch(request)
    assert not (tmp_path / "state" / "sessions").exists()


def test_unknown_runtime_names_the_choices() -> None:
    with pytest.raises(SandboxError, match="choose one of bwrap, docker, podman, apptainer"):
        get_runtime("lxc")


def test_refused_launches_leave_no_session_behind(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / ".git").mkdir(parents=True)
    (workspace / "eval").symlink_to("/etc")
    request = LaunchRequest(
        workspace=workspace,
        command=["true"],
        settings=Settings(state_dir=tmp_path / "state"),
        record_in_ledger=False,
        broker=False,
    )
    with pytest.raises(SandboxError, match="is a symlink"):
        launch(request)
    assert SessionStore(tmp_path / "state" / "sessions").records() == []


def test_detached_sessions_cannot_outlive_their_proxy_or_broker(tmp_path: Path) -> None:
    base = {"workspace": tmp_path, "detach": True, "settings": Settings(state_dir=tmp_path / "s")}
    with pytest.raises(SandboxError, match="need a container runtime"):
        launch(LaunchRequest(runtime="bwrap", **base))
    with pytest.raises(SandboxError, match="detach only with --network none or open"):
        launch(LaunchRequest(runtime="docker", network="allowlist", **base))


def test_every_runtime_gets_the_broker_socket_alone_and_read_only(tmp_path: Path) -> None:
    """The channel directory never reaches a sandbox: bwrap, Docker, Podman and Apptainer are all
    handed one read-only bind of the socket file, at a path in a directory the agent cannot write."""
    from framework.dispatch.broker import SOCKET_ENV
    from framework.sandbox.apptainer import ApptainerRuntime
    from framework.sandbox.bwrap import BwrapRuntime
    from framework.sandbox.docker import container_config
    from framework.sandbox.launch import BROKER_SOCKET, _broker, _Session
    from framework.sandbox.podman import PodmanRuntime
    from framework.sandbox.spec import SandboxSpec

    workspace = tmp_path / "ws"
    workspace.mkdir()
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    session, env = _Session(), {"PATH": "/usr/bin"}
    mounts = _broker(session, workspace, Settings(state_dir=tmp_path / "state"), "s-1", env)
    try:
        sock = session.broker.socket_path
        assert env[SOCKET_ENV] == str(BROKER_SOCKET)
        (socket_mount,) = [m for m in mounts if m.target == BROKER_SOCKET]
        assert (socket_mount.source, socket_mount.read_only) == (sock, True)
        assert all(m.source != sock.parent for m in mounts), (
            "the channel directory is never mounted"
        )
        assert (sock.parent.stat().st_mode & 0o777) == 0o700
        spec = SandboxSpec(argv=["true"], image="/images/ar.sif", workdir=workspace, mounts=mounts)
        bwrap = BwrapRuntime().argv(spec, None, tmp_path)
        assert ["--ro-bind", str(sock), str(BROKER_SOCKET)] == bwrap[
            bwrap.index(str(sock)) - 1 : bwrap.index(str(sock)) + 2
        ]
        docker = container_config(spec, None)["host_config"]["Mounts"]
        assert {
            "Target": str(BROKER_SOCKET),
            "Source": str(sock),
            "Type": "bind",
            "ReadOnly": True,
        }.items() <= next(m for m in docker if m["Target"] == str(BROKER_SOCKET)).items()
        podman = PodmanRuntime().argv(spec, None)
        assert f"--mount=type=bind,src={sock},dst={BROKER_SOCKET},ro" in podman
        apptainer = ApptainerRuntime().argv(spec, None)
        assert f"--bind={sock}:{BROKER_SOCKET}:ro" in apptainer
        assert not any(
            str(sock.parent) in a and str(sock) not in a for a in [*bwrap, *podman, *apptainer]
        )
    finally:
        session.broker.stop()
