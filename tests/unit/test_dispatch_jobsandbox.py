"""The job's Docker command line, built without a daemon: what it isolates, and that nothing the
agent controls can add options to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from framework.config import load_settings
from framework.dispatch import jobsandbox
from framework.dispatch.jobsandbox import MOUNT_CHECK, docker_bind, sandbox_plan, wrap_in_sandbox


def docker_plan(tmp_path: Path, world_size: int = 1, network: str = "allowlist") -> dict[str, Any]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    flags = {
        "state_dir": str(tmp_path / "state"),
        "cluster": {"job_runtime": "docker"},
        "sandbox": {"network": network},
    }
    settings = load_settings(workspace=workspace, flags=flags, environ={"HOME": "/nonexistent"})
    return sandbox_plan(settings.settings, workspace, workspace, None, world_size, tmp_path / "etc")


def wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **plan_args: Any) -> Any:
    plan = docker_plan(tmp_path, **plan_args)
    monkeypatch.setattr(jobsandbox.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(jobsandbox.os, "getuid", lambda: 1234)  # not root: no chown
    run_dir = tmp_path / "runs" / "g1"
    (run_dir / "artifacts").mkdir(parents=True)
    task = {"run_id": "g1", "run_dir": str(run_dir), "sandbox": plan}
    env = {"EXP_TOKEN": "value-not-on-the-command-line", "RANK": "0", "PATH": "/host/bin"}
    return wrap_in_sandbox(["python3", "exp.py", "--flag"], env, task), task


def test_docker_job_has_the_isolation_of_a_docker_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, task = wrapped(tmp_path, monkeypatch)
    argv = job.argv
    assert argv[:4] == ["/usr/bin/docker", "run", "--rm", "--init"]
    for option in (
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--network=none",
        "--ipc=private",
    ):
        assert option in argv
    assert [a for a in argv if a.startswith("--cap-add=")] == [
        "--cap-add=SETUID",
        "--cap-add=SETGID",
        "--cap-add=SETPCAP",
    ]
    workspace = task["sandbox"]["workspace"]
    assert f"--mount=type=bind,src={workspace},dst={workspace},readonly" in argv
    run_dir = task["run_dir"]
    assert f"--mount=type=bind,src={run_dir},dst={run_dir}" in argv
    assert not any("docker.sock" in a or a.startswith("--privileged") for a in argv)
    image = argv.index(task["sandbox"]["image"])
    # The job's first step checks that the workspace mounted is what the runner opened.
    info = os.stat(workspace)
    check = ["/bin/sh", "-c", MOUNT_CHECK, "ar-mount-check", workspace]
    assert argv[image + 1 :] == [
        *check,
        f"{info.st_dev}:{info.st_ino}",
        "--",
        "python3",
        "exp.py",
        "--flag",
    ]
    # Variables are named on the command line (readable by every user); values travel in env.
    assert "--env=EXP_TOKEN" in argv and not any("value-not-on" in a for a in argv)
    assert job.env["EXP_TOKEN"] == "value-not-on-the-command-line"
    assert job.env["PATH"] != "/host/bin" and job.env["HOME"] == "/home/agent"
    assert job.stop == ["/usr/bin/docker", "rm", "--force", "ar-g1-0"]
    assert job.info["runtime"] == "docker" and job.info["image"] == task["sandbox"]["image"]


def test_multi_task_docker_job_shares_the_node_network_only_in_an_open_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, _ = wrapped(tmp_path, monkeypatch, world_size=2, network="open")
    assert "--network=host" in job.argv and "--network=none" not in job.argv
    for policy in ("allowlist", "none"):
        (tmp_path / policy).mkdir()
        with pytest.raises(jobsandbox.JobSandboxError, match="job_runtime = 'bwrap'"):
            docker_plan(tmp_path / policy, world_size=2, network=policy)


def test_multi_task_bwrap_job_gets_a_private_link_never_the_node_network(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    flags = {"state_dir": str(tmp_path / "state")}
    settings = load_settings(workspace=workspace, flags=flags, environ={"HOME": "/nonexistent"})
    etc = jobsandbox.write_identity_files(tmp_path / "etc")
    plan = sandbox_plan(settings.settings, workspace, workspace, None, 4, etc)
    assert plan["network"] == "private" and "--unshare-net" in plan["template"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    task = {"run_id": "g1", "run_dir": str(run_dir), "sandbox": plan, "jobnet_key": "k"}
    env = {"RANK": "2", "WORLD_SIZE": "4", "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "23456"}
    job = wrap_in_sandbox(["python3", "exp.py"], env, task)
    bwrap = next(i for i, a in enumerate(job.argv) if a.endswith("bwrap"))
    if job.cleanup is not None:  # a real cgroup was made for it (root, or a delegated tree)
        job.cleanup()
    start = next(i for i, a in enumerate(job.argv) if a.endswith("jobnet.py"))
    relay = job.argv[start:bwrap]
    # the relay hands bwrap exactly the descriptors of the checked mounts, and nothing else
    passed = [a for fd in job.pass_fds for a in ("--pass-fd", str(fd))]
    assert relay[1:] == ["--rank", "2", "--world", "4", "--hub", "10.1.2.3:23456", *passed, "--"]
    for fd in job.pass_fds:
        os.close(fd)
    sandbox = job.argv[bwrap:]
    assert "--unshare-net" not in sandbox
    setenv = {sandbox[i + 1]: sandbox[i + 2] for i, a in enumerate(sandbox) if a == "--setenv"}
    assert setenv["MASTER_ADDR"] == "169.254.0.1" and setenv["AR_RANK_ADDR"] == "169.254.0.3"
    assert setenv["GLOO_SOCKET_IFNAME"] == "ar0"
    # the key reaches the relay only, in its environment: never argv, never the job's
    assert job.env == {"PATH": "/usr/bin:/bin", "AR_JOBNET_KEY": "k"}
    assert "k" not in job.argv and "AR_JOBNET_KEY" not in setenv
    del task["jobnet_key"]
    with pytest.raises(jobsandbox.JobSandboxError, match="no network key"):
        wrap_in_sandbox(["python3", "exp.py"], env, task)


def test_mount_path_with_a_comma_cannot_add_mount_options() -> None:
    option = docker_bind("/ws/a,readonly=false", "/ws/a,readonly=false", read_only=True)
    assert option == (
        '--mount=type=bind,"src=/ws/a,readonly=false","dst=/ws/a,readonly=false",readonly'
    )
    assert (
        docker_bind('/ws/q"x', "/t", read_only=False) == '--mount=type=bind,"src=/ws/q""x",dst=/t'
    )


def test_node_without_docker_fails_the_run_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobsandbox.shutil, "which", lambda name: None)
    task = {"run_id": "g1", "run_dir": str(tmp_path), "sandbox": docker_plan(tmp_path)}
    with pytest.raises(jobsandbox.JobSandboxError, match="job_runtime = 'bwrap'"):
        wrap_in_sandbox(["true"], {}, task)


def test_docker_job_is_limited_to_the_cpus_and_memory_it_asked_for(tmp_path: Path) -> None:
    from framework.dispatch.models import Resources

    workspace = tmp_path / "ws"
    workspace.mkdir()
    flags = {
        "state_dir": str(tmp_path / "state"),
        "cluster": {"job_runtime": "docker"},
        "sandbox": {"network": "open"},
    }
    settings = load_settings(workspace=workspace, flags=flags, environ={"HOME": "/nonexistent"})
    resources = Resources(cpus=3, mem_gb=8, tasks_per_node=2)
    plan = sandbox_plan(
        settings.settings, workspace, workspace, None, 2, tmp_path / "etc", resources
    )
    template = plan["template"]
    image = template.index(plan["image"])
    limits = [a for a in template[:image] if a.startswith(("--cpus", "--memory"))]
    # per task: its CPUs, and half of the node's 8 GiB (two tasks per node), swap included
    assert limits == ["--cpus=3", "--memory=4096m", "--memory-swap=4096m"]
    assert "--pids-limit=1024" in template[:image]  # cluster.job_pids
    (tmp_path / "other").mkdir()
    defaults = docker_plan(tmp_path / "other")["template"]
    # a request that names no memory gets cluster.job_memory_gb (16 GiB) and one CPU
    assert [a for a in defaults if a.startswith(("--cpus", "--memory"))] == [
        "--cpus=1",
        "--memory=16384m",
        "--memory-swap=16384m",
    ]
