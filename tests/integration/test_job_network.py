"""The network of multi-task jobs on the real Slurm test cluster (nodes n[1-4], all on 127.0.0.1):
the ranks of a job reach each other and nothing else, and a real torch.distributed rendezvous
(gloo) works across nodes under that policy."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.config import load_settings
from framework.dispatch.broker import BrokerHandle, start_broker
from framework.dispatch.client import call
from tests.integration.test_dispatch_broker import make_workspace
from tests.integration.test_slurm_dispatch import require_slurm_cluster, submit, wait
from tests.support import require_bwrap

pytestmark = pytest.mark.slurm

VENV = Path("/work/main/.venv")
"""The shared virtualenv with torch (CPU build); mounted read-only into the jobs."""

NET_PROBE = """
import json, os, socket, sys, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
services = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        services[target] = "REACHED"
    except OSError as exc:
        services[target] = f"errno {exc.errno}"
master, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]) + 1
peers = []
if rank == 0:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((master, port))
    server.listen()
    for _ in range(world - 1):
        conn, _ = server.accept()
        peers.append(int(conn.recv(16)))
        conn.sendall(b"ok")
        conn.close()
else:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = socket.create_connection((master, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.sendall(str(rank).encode())
    assert conn.recv(2) == b"ok"
    peers.append(0)
out = os.path.join(os.environ["ARTIFACTS_DIR"], f"rank{rank}.json")
json.dump({"rank": rank, "services": services, "peers": sorted(peers),
           "node": os.environ.get("SLURMD_NODENAME")}, open(out, "w"))
"""

GLOO_PROBE = """
import datetime, json, os, socket, sys
import torch
import torch.distributed as dist
dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=120))
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
services = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        services[target] = "REACHED"
    except OSError as exc:
        services[target] = f"errno {exc.errno}"
out = os.path.join(os.environ["ARTIFACTS_DIR"], f"rank{dist.get_rank()}.json")
json.dump({"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": value.item(),
           "node": os.environ.get("SLURMD_NODENAME"), "services": services}, open(out, "w"))
dist.barrier()
dist.destroy_process_group()
"""


class HostService:
    """A TCP service of the host on every address (loopback included) that counts connections."""

    def __init__(self) -> None:
        self.server = socket.create_server(("0.0.0.0", 0))
        self.port = self.server.getsockname()[1]
        self.accepted: list[Any] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.server.accept()
            except OSError:
                return
            self.accepted.append(peer)
            conn.close()

    def targets(self) -> list[str]:
        """The host's loopback and its other IPv4 addresses, at the service's port."""
        addresses = ["127.0.0.1"]
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            address = line.split()[3].split("/")[0]
            if address not in addresses:
                addresses.append(address)
        return [f"{a}:{self.port}" for a in addresses]

    def close(self) -> None:
        # close() alone leaves accept() blocked; shutdown wakes it. No thread may outlive the test:
        # the audit forks its workers only in a process without other threads.
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def host_service() -> Iterator[HostService]:
    service = HostService()
    yield service
    service.close()


@pytest.fixture
def net_broker(tmp_path: Path) -> Iterator[tuple[BrokerHandle, Path]]:
    require_slurm_cluster()
    require_bwrap()
    workspace = make_workspace(tmp_path)
    (workspace / "net_probe.py").write_text(NET_PROBE)
    (workspace / "gloo_probe.py").write_text(GLOO_PROBE)
    for args in (
        ["add", "."],
        ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "probes"],
    ):
        subprocess.run(["git", "-C", str(workspace), *args], check=True)
    flags = {
        "state_dir": str(tmp_path / "state"),
        "cluster": {"executor": "slurm", "max_nodes": 4},
        "sandbox": {"mounts": [{"source": str(VENV), "read_only": True}]},
    }
    settings = load_settings(
        workspace=workspace, flags=flags, environ={"HOME": str(tmp_path)}
    ).settings
    assert settings.sandbox.network != "open"
    handle = start_broker(workspace, settings, "net-session")
    yield handle, workspace
    for run in call({"op": "list"}, handle.env["REMOTE_RUN_SOCKET"])["runs"]:
        if run["state"] in ("queued", "running"):
            call({"op": "cancel", "run": run["run_id"]}, handle.env["REMOTE_RUN_SOCKET"])
    handle.stop()


def ranks_of(run: dict[str, Any], world: int) -> list[dict[str, Any]]:
    artifacts = Path(run["run_dir"]) / "artifacts"
    return [json.loads((artifacts / f"rank{r}.json").read_text()) for r in range(world)]


def logs_of(run: dict[str, Any]) -> str:
    run_dir = Path(run["run_dir"])
    return "\n".join(p.read_text() for p in sorted(run_dir.glob("std*.log")))


@pytest.mark.parametrize(
    "layout", [{"nodes": 1, "tasks_per_node": 2}, {"nodes": 2, "tasks_per_node": 1}]
)
def test_ranks_of_a_multi_task_job_reach_each_other_and_no_host_service(
    net_broker: tuple[BrokerHandle, Path], host_service: HostService, layout: dict[str, int]
) -> None:
    handle, workspace = net_broker
    targets = host_service.targets()
    (run_id,) = submit(handle, workspace, ["python3", "net_probe.py", *targets], resources=layout)
    (run,) = wait(handle, run_id, timeout_s=180)
    assert run["state"] == "finished", logs_of(run)
    ranks = ranks_of(run, 2)
    assert [r["peers"] for r in ranks] == [[1], [0]]
    for rank in ranks:
        assert set(rank["services"]) == set(targets)
        assert "REACHED" not in rank["services"].values(), rank
    assert host_service.accepted == []
    if layout["nodes"] == 2:
        assert len({r["node"] for r in ranks}) == 2
    started = json.loads((Path(run["run_dir"]) / "started.0.json").read_text())
    assert started["sandbox"]["network"] == "private"


def test_gloo_all_reduce_across_2_nodes_x_2_tasks_sums_right_and_no_rank_reaches_the_host(
    net_broker: tuple[BrokerHandle, Path], host_service: HostService
) -> None:
    handle, workspace = net_broker
    targets = host_service.targets()
    command = [
        sys.executable,
        str(handle.client_path),
        "submit",
        "--nodes",
        "2",
        "--tasks-per-node",
        "2",
        "--time",
        "10",
        "--wait",
        "--json",
        "--",
        str(VENV / "bin" / "python"),
        "gloo_probe.py",
        *targets,
    ]
    env = {**os.environ, **handle.env}
    done = subprocess.run(
        command, cwd=workspace, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.stdout.strip().startswith("["), (done.stdout, done.stderr)
    (run,) = json.loads(done.stdout)
    assert run["state"] == "finished", logs_of(run)
    ranks = ranks_of(run, 4)
    assert [r["sum"] for r in ranks] == [10.0] * 4  # 1 + 2 + 3 + 4
    assert {r["world"] for r in ranks} == {4}
    assert len({r["node"] for r in ranks}) == 2
    for rank in ranks:
        assert "REACHED" not in rank["services"].values(), rank
    assert host_service.accepted == []
