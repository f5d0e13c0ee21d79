"""Jobs run in a real Docker container on the node (``cluster.job_runtime = "docker"``), with the
protections of a Docker session, from the workspace snapshot taken at submit time."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.dispatch.broker import BrokerHandle, start_broker
from framework.dispatch.client import call
from tests.integration.test_dispatch_broker import ledger_of, make_settings, make_workspace
from tests.support import require_binary, require_docker, unavailable

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("AR_TEST_IMAGE", "agentic-researcher:latest")

PROBE = """
import json, os, socket, sys
seen = {
    "dockerenv": os.path.exists("/.dockerenv"),
    "uid": os.getuid(),
    "home": os.environ.get("HOME"),
    "secret_in_env": "sk-host-secret" in json.dumps(dict(os.environ)),
    "docker_socket": os.path.exists("/var/run/docker.sock") or os.path.exists("/run/docker.sock"),
}
for label, path in (("decoy", sys.argv[1]), ("ledger", sys.argv[2])):
    try:
        open(path).read()
        seen[label] = "READ"
    except OSError as exc:
        seen[label] = exc.errno
try:
    open("exp.py", "a").write("tampered")
    seen["workspace_write"] = "WROTE"
except OSError as exc:
    seen["workspace_write"] = exc.errno
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=2).close()
    seen["host_port"] = "CONNECTED"
except OSError as exc:
    seen["host_port"] = type(exc).__name__
mounts = {line.split()[4]: line.split()[5] for line in open("/proc/self/mountinfo")}
seen["workspace_mount"] = mounts.get(os.getcwd(), "")
seen["run_dir_mount"] = mounts.get(os.environ["RUN_DIR"], "")
print(json.dumps(seen))
exec(open("exp.py").read())
"""


def require_docker_jobs() -> None:
    require_binary("docker", "docker CLI")
    client = require_docker()
    try:
        client.images.get(IMAGE)
    except Exception as exc:
        unavailable("docker image", f"{IMAGE}: {exc} (run .ci/components/15-docker.sh)")


def docker_settings(workspace: Path, state: Path, **cluster: Any) -> Any:
    settings = make_settings(workspace, state, job_runtime="docker", **cluster)
    return settings.model_copy(
        update={"sandbox": settings.sandbox.model_copy(update={"image": IMAGE})}
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def broker(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BrokerHandle]:
    require_docker_jobs()
    # A host secret in the broker's environment: the job must not see it.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-host-secret")
    handle = start_broker(workspace, docker_settings(workspace, tmp_path / "state"), "s-docker")
    yield handle
    handle.stop()


@contextlib.contextmanager
def host_secret(tmp_path: Path) -> Iterator[Path]:
    ssh = Path.home() / ".ssh"
    created_dir = not ssh.exists()
    ssh.mkdir(mode=0o700, exist_ok=True)
    decoy = ssh / f"ar-test-decoy-{tmp_path.name}"
    decoy.write_text("host secret")
    try:
        yield decoy
    finally:
        decoy.unlink()
        if created_dir:
            ssh.rmdir()


def probe_argv(decoy: Path, ledger: Path, port: int) -> list[str]:
    return ["python3", "-c", PROBE, str(decoy), str(ledger), str(port)]


def assert_contained(seen: dict[str, Any]) -> None:
    assert seen["dockerenv"] is True  # inside a Docker container
    assert seen["uid"] != 0 and seen["home"] == "/home/agent"
    assert seen["secret_in_env"] is False and seen["docker_socket"] is False
    # Not mounted: the image's own /root (EACCES) or nothing at all (ENOENT), never the host's file.
    assert seen["decoy"] in (2, 13) and seen["ledger"] == 2
    assert seen["workspace_write"] in (13, 30)  # EACCES (not its files) or EROFS
    assert seen["workspace_mount"].split(",")[0] == "ro"  # the snapshot, read-only
    assert seen["run_dir_mount"].split(",")[0] == "rw"
    assert seen["host_port"] != "CONNECTED"


def test_job_runs_in_a_container_without_host_secrets_and_its_metrics_are_recorded(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    sock = broker.env["REMOTE_RUN_SOCKET"]
    before = (workspace / "exp.py").read_text()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with host_secret(tmp_path) as decoy:
            ledger_file = tmp_path / "state" / "ledger.sqlite"
            answer = call(
                {
                    "op": "submit",
                    "request": {
                        "argv": probe_argv(decoy, ledger_file, port),
                        "cwd": str(workspace),
                    },
                },
                sock,
            )
            assert answer["ok"], answer
            (run,) = call({"op": "wait", "run": answer["group"], "timeout_s": 120}, sock)["runs"]
    run_dir = Path(run["run_dir"])
    assert run["state"] == "finished", (run_dir / "stderr.log").read_text()
    lines = (run_dir / "stdout.log").read_text().splitlines()
    assert_contained(json.loads(lines[0]))
    assert lines[1] == f"hello from {run['run_id']}"
    assert (workspace / "exp.py").read_text() == before
    assert json.loads((run_dir / "metrics.json").read_text()) == {"loss": 0.25}
    assert run["sandbox"] == "docker" and run["sandbox_image"] == IMAGE
    started = json.loads((run_dir / "started.0.json").read_text())
    assert started["sandbox"]["runtime"] == "docker" and started["sandbox"]["network"] == "none"
    with ledger_of(tmp_path / "state") as ledger:
        recorded = ledger.run(run["run_id"])
        assert recorded.state == "finished"
        assert recorded.metrics == {"loss": 0.25}
        assert recorded.artifacts == ["artifacts/model.txt"]
        assert recorded.extra["sandbox"] == "docker" and recorded.extra["sandbox_image"] == IMAGE


def containers_of(run_id: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=agentic-researcher.run={run_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_cancelled_job_leaves_no_container_behind_even_if_it_ignores_sigterm(
    broker: BrokerHandle, workspace: Path
) -> None:
    """A container outlives its killed client (`docker run`): the runner must remove it."""
    sock = broker.env["REMOTE_RUN_SOCKET"]
    stubborn = ["sh", "-c", "trap '' TERM; sleep 300"]  # ignores SIGTERM
    answer = call({"op": "submit", "request": {"argv": stubborn, "cwd": str(workspace)}}, sock)
    (run_id,) = answer["runs"]
    deadline = time.monotonic() + 60
    while not containers_of(run_id):
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.2)
    call({"op": "cancel", "run": run_id}, sock)
    (run,) = call({"op": "wait", "run": run_id, "timeout_s": 60}, sock)["runs"]
    assert run["state"] == "cancelled", run
    assert containers_of(run_id) == []


def test_docker_job_container_is_limited_to_the_cpus_and_memory_it_asked_for(
    broker: BrokerHandle, workspace: Path
) -> None:
    """Read inside the container from its own cgroup: what the engine applied, not what we asked."""
    sock = broker.env["REMOTE_RUN_SOCKET"]
    read = (  # cgroup v2 files, else v1 (this host's engine uses v1)
        "import json, os\n"
        "def get(*names):\n"
        "    for name in names:\n"
        "        if os.path.exists(name):\n"
        "            return open(name).read().split()\n"
        "cpu = get('/sys/fs/cgroup/cpu.max') or get('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')"
        " + get('/sys/fs/cgroup/cpu/cpu.cfs_period_us')\n"
        "memory = get('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes')\n"
        "print(json.dumps([cpu, memory[0]]))\n"
    )
    request = {
        "argv": ["python3", "-c", read],
        "cwd": str(workspace),
        "resources": {"cpus": 1, "mem_gb": 0.5},
    }
    answer = call({"op": "submit", "request": request}, sock)
    assert answer["ok"], answer
    (run,) = call({"op": "wait", "run": answer["group"], "timeout_s": 120}, sock)["runs"]
    run_dir = Path(run["run_dir"])
    assert run["state"] == "finished", (run_dir / "stderr.log").read_text()
    (quota, period), memory = json.loads((run_dir / "stdout.log").read_text())
    assert int(quota) / int(period) == 1.0  # one CPU
    assert int(memory) == 512 * 1024 * 1024
