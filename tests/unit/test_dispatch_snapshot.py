"""Workspace snapshots (real git) and the job sandbox command line built from them."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from framework.config import load_settings
from framework.dispatch.jobsandbox import (
    ARGV_PLACEHOLDER,
    JobSandboxError,
    sandbox_plan,
    wrap_in_sandbox,
    write_identity_files,
)
from framework.dispatch.snapshot import (
    MAX_UNTRACKED_FILE_BYTES,
    SnapshotError,
    _extract_checked,
    take_snapshot,
)


def git(workspace: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(workspace), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q")
    (ws / "train.py").write_text("print('v1')\n")
    (ws / ".gitignore").write_text(".venv/\ndata/\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "v1")
    return ws


def test_snapshot_holds_edits_and_untracked_files_but_copies_no_ignored_data(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / "train.py").write_text("print('v2')\n")
    (workspace / "new.py").write_text("x = 1\n")
    (workspace / "data").mkdir()
    (workspace / "data" / "big.bin").write_bytes(b"\0" * 1000)
    status_before = git(workspace, "status", "--porcelain")
    snap = take_snapshot(workspace, tmp_path / "store")
    assert (snap.root / "train.py").read_text() == "print('v2')\n"
    assert (snap.root / "new.py").read_text() == "x = 1\n"
    assert snap.ignored == ["data"]
    assert (snap.root / "data").is_dir() and not (snap.root / "data" / "big.bin").exists()
    assert snap.commit == git(workspace, "rev-parse", "HEAD").strip()
    assert b"+print('v2')" in snap.diff and b"new.py" in snap.diff
    # The agent's index, staging and stash are untouched.
    assert git(workspace, "status", "--porcelain") == status_before
    assert git(workspace, "stash", "list") == ""


def test_same_workspace_state_reuses_one_copy_and_a_clean_tree_has_no_diff(
    workspace: Path, tmp_path: Path
) -> None:
    first = take_snapshot(workspace, tmp_path / "store")
    second = take_snapshot(workspace, tmp_path / "store")
    assert first.root == second.root and first.tree == second.tree
    assert first.diff == b"" and first.diff_sha256 is None
    (workspace / "train.py").write_text("print('v3')\n")
    assert take_snapshot(workspace, tmp_path / "store").root != first.root


def test_repository_without_commits_is_snapshotted_against_the_empty_tree(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "fresh"
    ws.mkdir()
    git(ws, "init", "-q")
    (ws / "a.py").write_text("a = 1\n")
    snap = take_snapshot(ws, tmp_path / "store")
    assert snap.commit is None
    assert (snap.root / "a.py").read_text() == "a = 1\n"
    assert b"a.py" in snap.diff


def test_ignored_symlink_is_never_offered_for_mounting(workspace: Path, tmp_path: Path) -> None:
    (workspace / "data").symlink_to(Path.home())
    snap = take_snapshot(workspace, tmp_path / "store")
    assert "data" not in snap.ignored


def test_oversized_untracked_file_is_refused_with_the_way_out(
    workspace: Path, tmp_path: Path
) -> None:
    with (workspace / "weights.pt").open("wb") as fh:
        fh.truncate(MAX_UNTRACKED_FILE_BYTES + 1)
    with pytest.raises(SnapshotError, match=r"weights\.pt.*\.gitignore"):
        take_snapshot(workspace, tmp_path / "store")


@pytest.fixture(autouse=True)
def bwrap_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the command line is our logic; running it is the integration tests' job."""
    monkeypatch.setattr("framework.dispatch.jobsandbox.shutil.which", lambda name: f"/x/{name}")


def plan_for(workspace: Path, tmp_path: Path, world_size: int = 1) -> dict[str, object]:
    settings = load_settings(
        workspace=workspace,
        flags={"state_dir": str(tmp_path / "state")},
        environ={"HOME": str(tmp_path)},
    ).settings
    (workspace / "data").mkdir(exist_ok=True)
    snap = take_snapshot(workspace, tmp_path / "store")
    etc = write_identity_files(tmp_path / "etc")
    return sandbox_plan(settings, workspace, workspace, snap, world_size, etc)


def test_wrapped_command_mounts_snapshot_read_only_and_run_dir_writable_before_root_is_sealed(
    workspace: Path, tmp_path: Path
) -> None:
    plan = plan_for(workspace, tmp_path)
    run_dir = tmp_path / "runs" / "r1"
    task = {"run_dir": str(run_dir), "sandbox": plan}
    job = wrap_in_sandbox(["python3", "train.py"], {"EXP_LR": "0.1", "PATH": "/usr/bin"}, task)
    argv = job.argv
    snapshot = str(plan["snapshot"])

    def position(*items: str) -> int:
        return next(i for i in range(len(argv)) if argv[i : i + len(items)] == list(items))

    assert position("--ro-bind", snapshot, str(workspace)) < position("--remount-ro", "/")
    data = str(workspace / "data")
    # The live ignored path is mounted by the descriptor the runner checked, never by its name.
    (fd,) = [
        argv[i + 1] for i in range(len(argv) - 2) if argv[i : i + 3 : 2] == ["--ro-bind-fd", data]
    ]
    assert int(fd) in job.pass_fds
    assert position("--ro-bind-fd", fd, data) > position("--ro-bind", snapshot, str(workspace))
    assert position("--bind", str(run_dir), str(run_dir)) < position("--remount-ro", "/")
    assert "--unshare-net" in argv
    assert position("--setenv", "EXP_LR", "0.1") > position("--clearenv")
    assert position("--setenv", "HOME", "/home/agent") > position("--clearenv")
    assert argv[-3:] == ["--", "python3", "train.py"] and ARGV_PLACEHOLDER not in argv
    assert job.env == {"PATH": "/usr/bin:/bin"}  # bwrap itself inherits nothing
    assert job.info["network"] == "none"


def test_multi_task_jobs_share_the_node_network_so_ranks_can_meet(
    workspace: Path, tmp_path: Path
) -> None:
    plan = plan_for(workspace, tmp_path, world_size=2)
    job = wrap_in_sandbox(["true"], {}, {"run_dir": str(tmp_path), "sandbox": plan})
    assert "--unshare-net" not in job.argv and job.info["network"] == "open"


def test_ignored_dir_swapped_for_a_symlink_after_submit_is_refused(
    workspace: Path, tmp_path: Path
) -> None:
    plan = plan_for(workspace, tmp_path)
    (workspace / "data").rmdir()
    (workspace / "data").symlink_to(Path.home())
    with pytest.raises(JobSandboxError, match="symbolic link"):
        wrap_in_sandbox(["true"], {}, {"run_dir": str(tmp_path), "sandbox": plan})


def test_only_the_top_of_its_own_repository_counts_as_a_git_workspace(
    workspace: Path, tmp_path: Path
) -> None:
    from framework.dispatch.snapshot import is_git_workspace

    assert is_git_workspace(workspace)
    # Inside another repository, with only the mount point a sandbox creates for .git/hooks: git
    # would find the enclosing repository, so this is not a workspace to snapshot.
    inner = workspace / "inner"
    (inner / ".git" / "hooks").mkdir(parents=True)
    assert not is_git_workspace(inner)
    assert not is_git_workspace(tmp_path)


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    buffer.seek(0)
    return buffer


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> Any:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


@pytest.mark.parametrize("checked", [False, True], ids=["tar-filter", "checked-by-hand"])
def test_snapshot_extraction_of_a_git_archive_is_the_same_with_or_without_the_tar_filter(
    workspace: Path, tmp_path: Path, checked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11 before 3.11.4 (Debian 12's) has no extraction filters: the snapshot is then
    extracted member by member with the same guarantees, and holds the same files."""
    if checked:
        monkeypatch.delattr(tarfile, "tar_filter", raising=False)
    (workspace / "pkg").mkdir()
    (workspace / "pkg" / "run.sh").write_text("echo hi\n")
    (workspace / "pkg" / "run.sh").chmod(0o775)
    (workspace / "link").symlink_to("pkg/run.sh")
    snap = take_snapshot(workspace, tmp_path / "store")
    assert (snap.root / "pkg" / "run.sh").read_text() == "echo hi\n"
    assert (snap.root / "pkg" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(snap.root / "link") == "pkg/run.sh"
    assert (snap.root / "train.py").read_text() == "print('v1')\n"


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([(_member("/etc/evil"), b"x")], "outside"),
        ([(_member("a/../../evil"), b"x")], "outside"),
        (
            [(_member("out", tarfile.SYMTYPE, link=".."), b""), (_member("out/evil"), b"x")],
            "outside",
        ),
        ([(_member("hard", tarfile.LNKTYPE, link="a"), b"")], "not a file"),
        ([(_member("dev", tarfile.CHRTYPE), b"")], "not a file"),
        ([(_member("fifo", tarfile.FIFOTYPE), b"")], "not a file"),
    ],
    ids=["absolute", "dot-dot", "through-a-link", "hard-link", "device", "fifo"],
)
def test_hand_checked_extraction_refuses_what_would_escape_or_is_no_plain_file(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], why: str
) -> None:
    into = tmp_path / "deep" / "into"
    into.mkdir(parents=True)
    with (
        tarfile.open(fileobj=_tar(members), mode="r|") as archive,
        pytest.raises(SnapshotError, match=why),
    ):
        _extract_checked(archive, into)
    assert not (tmp_path / "deep" / "evil").exists()
    assert not (tmp_path / "evil").exists()


def test_hand_checked_extraction_clears_setuid_and_group_other_write_bits(tmp_path: Path) -> None:
    members = [
        (_member("d", tarfile.DIRTYPE, mode=0o1777), b""),
        (_member("d/s", mode=0o6777), b"x"),
    ]
    with tarfile.open(fileobj=_tar(members), mode="r|") as archive:
        _extract_checked(archive, tmp_path)
    assert (tmp_path / "d").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "d" / "s").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "d" / "s").read_bytes() == b"x"
