"""Host-side git executes nothing the agent wrote (issue 16, items 1 and 8), with real git and bwrap.

:func:`plant` does what a hostile agent does to its repository: every git setting that runs a
program (filters, ``diff.external``, textconv, fsmonitor, hooks through ``core.hooksPath``,
``core.sshCommand``, ``core.pager``, ``include.path``/``includeIf``) behind every indirection git
follows (``.git/commondir``, a nested repository whose ``.git`` is a ``gitdir:`` file,
``worktrees/``, ``objects/info/alternates``, ``info/attributes``, ``.gitattributes``), each program
leaving a marker file named for it in a host directory. The tests assert that no marker appears
after launch, snapshot (a real ``remote-run``), session end and audit, on bubblewrap and Docker, and
that what git reported is still right. A control test shows the same plants do run under the git
commands the host used before (so the assertions can fail).

:func:`forge_index` is item 8: the agent stages a forged file and hides it with the index's
assume-unchanged and skip-worktree bits while the file on disk stays honest.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from framework import hostgit
from framework.audit.checks import AuditConfig, CheckContext, Checker, Severity
from framework.audit.ledger import LedgerRuns
from framework.config import ClusterSettings, ResearchSettings, SandboxSettings, Settings
from framework.dispatch.snapshot import take_snapshot
from framework.gitplanted import planted
from framework.ledger import EventKind, open_ledger
from framework.sandbox.launch import LaunchRequest, launch
from framework.sandbox.store import SessionStore
from framework.workspace import Workspace, git_state
from tests.integration import test_sandbox_attacks as attacks
from tests.integration.test_sandbox_attacks import IMAGE, PROTECTED
from tests.support import require_bwrap

pytestmark = pytest.mark.slow


def plant(ws: str, markers: str) -> None:
    """Plant every executable git setting behind every indirection (runs on the host in the
    direct tests and inside the sandbox, as the agent, in the launch tests)."""
    import os
    import subprocess
    import textwrap

    def write(rel: str, text: str, mode: int = 0o644) -> None:
        path = os.path.join(ws, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, mode)

    def mark(name: str, then: str = "cat") -> str:
        return f'"touch {markers}/{name}; {then}"'  # quoted: `;` starts a comment in config

    def git(*args: str, cwd: str = ws) -> None:
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-c", "user.email=a@b", "-c", "user.name=a", *args],
            cwd=cwd,
            check=True,
            capture_output=True,
        )

    # A nested repository committed as a gitlink; its .git is a `gitdir:` file pointing into
    # .git/modules, and its own config runs a program on any `git status` inside it.
    os.makedirs(f"{ws}/.git/modules", exist_ok=True)
    git("init", "-q", "--separate-git-dir", f"{ws}/.git/modules/sub", f"{ws}/sub")
    write("sub/x.txt", "x\n")
    git("add", "-A", cwd=f"{ws}/sub")
    git("commit", "-qm", "sub", cwd=f"{ws}/sub")
    git("add", "sub")
    git("commit", "-qm", "add sub")
    with open(f"{ws}/.git/modules/sub/config", "a") as fh:
        fh.write(f"[core]\n\tfsmonitor = {mark('nested-fsmonitor', 'false')}\n")
        fh.write(f'[filter "n"]\n\tclean = {mark("nested-clean")}\n')
    write("sub/.gitattributes", "* filter=n\n")
    os.utime(f"{ws}/sub/x.txt", (1, 1))  # stat no longer matches: git re-reads it, filtered

    # .git/commondir moves git's config (and hooks, info/, objects, refs) to a directory the
    # agent owns: the read-only .git/config and .git/hooks no longer count.
    os.makedirs(f"{ws}/.evil/info")
    os.symlink("../.git/objects", f"{ws}/.evil/objects")
    os.symlink("../.git/refs", f"{ws}/.evil/refs")
    write(
        ".evil/config",
        textwrap.dedent(f"""\
            [core]
            \trepositoryformatversion = 0
            \tbare = false
            \thooksPath = {ws}/.evil/hooks
            \tsshCommand = {mark("ssh-command", "false")}
            \tpager = {mark("pager")}
            [include]
            \tpath = included
            [includeIf "gitdir:/"]
            \tpath = included-if
            [filter "evil"]
            \tsmudge = {mark("filter-smudge")}
            [filter "evilproc"]
            \tprocess = {mark("filter-process", "false")}
            [diff]
            \texternal = {mark("diff-external", "true")}
            [diff "evil"]
            \ttextconv = {mark("textconv")}
            """),
    )
    write(".evil/included", f"[core]\n\tfsmonitor = {mark('include-fsmonitor', 'false')}\n")
    write(".evil/included-if", f'[filter "evil"]\n\tclean = {mark("includeif-clean")}\n')
    for hook in ("post-index-change", "pre-commit", "post-checkout", "reference-transaction"):
        write(f".evil/hooks/{hook}", f"#!/bin/sh\ntouch {markers}/hook-{hook}\n", 0o755)
    write(".git/commondir", "../.evil\n")
    # Attributes assign the drivers: in the tree, in the common dir's info/, and in .git/info/.
    write(".gitattributes", "* filter=evil diff=evil\n")
    for info in (".evil/info/attributes", ".git/info/attributes"):
        write(info, "*.dat filter=evilproc\n")
    write("data.dat", "new untracked data\n")
    # Objects from another repository outside the workspace, and a linked worktree with its own
    # config.
    write(".git/objects/info/alternates", f"{markers}/../secret/.git/objects\n")
    write(".git/worktrees/w1/gitdir", f"{ws}/../w1/.git\n")
    write(".git/worktrees/w1/commondir", "../..\n")
    write(".git/worktrees/w1/HEAD", "ref: refs/heads/w1\n")
    write(".git/worktrees/w1/config.worktree", f"[core]\n\tfsmonitor = {mark('worktree')}\n")


def forge_index(ws: str) -> None:
    """Stage forged contents of two files, put the honest text back on disk, and hide the
    difference with the index's assume-unchanged and skip-worktree bits."""
    import subprocess

    for name, bit in (("exp.py", "--assume-unchanged"), ("exp2.py", "--skip-worktree")):
        with open(f"{ws}/{name}", "w") as fh:
            fh.write(f"print('forged {name}')\n")
        subprocess.run(["git", "-c", "safe.directory=*", "-C", ws, "add", name], check=True)
        with open(f"{ws}/{name}", "w") as fh:
            fh.write(f"print('honest {name}')\n")
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", ws, "update-index", bit, name], check=True
        )


def _git(ws: Path, *args: str) -> str:
    return subprocess.run(
        [
            "git",
            "-C",
            str(ws),
            "-c",
            "safe.directory=*",
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    _git(ws, "init", "-q")
    (ws / "exp.py").write_text("print('committed exp.py')\n")
    (ws / "exp2.py").write_text("print('committed exp2.py')\n")
    (ws / "notes.md").write_text("notes\n")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-qm", "v1")
    (tmp_path / "markers").mkdir()
    _secret_repository(tmp_path)
    return ws


def _secret_repository(tmp_path: Path) -> None:
    """Another project's repository on the host, which the planted alternates point at."""
    secret = tmp_path / "secret"
    secret.mkdir()
    _git(secret, "init", "-q")
    (secret / "credentials.txt").write_text("SECRET\n")
    _git(secret, "add", "-A")
    _git(secret, "commit", "-qm", "secret")


def _markers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "markers").iterdir())


@pytest.mark.bwrap
def test_planted_git_settings_run_under_the_git_commands_the_host_used_before(
    tmp_path: Path, repo: Path
) -> None:
    """Control: the plants are live. The host's old commands (`-c core.fsmonitor=false -c
    core.hooksPath=/dev/null` on the repository itself) ran them, with the host's privileges."""
    plant(str(repo), str(tmp_path / "markers"))
    old = ["git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-C", str(repo)]
    (repo / "exp.py").write_text("print('edited')\n")
    (repo / "notes.md").write_text("edited\n")
    for args in (["status", "--porcelain"], ["diff", "HEAD"], ["add", "-A"]):
        subprocess.run([*old, *args], capture_output=True, check=False)
    fired = _markers(tmp_path)
    assert {"nested-clean", "includeif-clean", "filter-process", "diff-external"} <= set(fired), (
        fired
    )


@pytest.mark.bwrap
def test_host_git_runs_nothing_the_agent_planted_even_inside_its_sandbox(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git_state, the snapshot and the session-end check on a repository with every plant: no
    program runs, not even confined (the marker directory is made writable inside host git's
    sandbox for this test, so a program that ran there would show), and the results are right."""
    require_bwrap()
    markers = tmp_path / "markers"
    plant(str(repo), str(markers))
    (repo / "exp.py").write_text("print('edited exp.py')\n")
    (repo / "new.py").write_text("print('new')\n")
    sandbox_argv = hostgit.sandbox_argv

    def with_markers_writable(*args: object, **kwargs: object) -> list[str]:
        argv = sandbox_argv(*args, **kwargs)  # type: ignore[arg-type]
        cut = argv.index("--remount-ro")
        return [*argv[:cut], "--bind", str(markers), str(markers), *argv[cut:]]

    monkeypatch.setattr(hostgit, "sandbox_argv", with_markers_writable)
    head = _git(repo, "rev-parse", "HEAD").strip()

    state = git_state(repo)
    snapshot = take_snapshot(repo, tmp_path / "store")
    found = {e.path for e in planted(repo, since=0)}

    assert _markers(tmp_path) == []
    assert state.commit == head and state.dirty and state.diff_sha256
    assert snapshot.commit == head
    assert (snapshot.root / "exp.py").read_text() == "print('edited exp.py')\n"
    assert (snapshot.root / "new.py").read_text() == "print('new')\n"
    assert b"+print('edited exp.py')" in snapshot.diff
    assert {
        ".git/commondir",
        ".git/worktrees",
        ".git/modules",
        ".git/objects/info/alternates",
        ".git/info/attributes",
        "sub",
    } <= found, found


@pytest.mark.bwrap
def test_a_forged_index_changes_neither_the_snapshot_nor_the_git_state(
    tmp_path: Path, repo: Path
) -> None:
    """Item 8: what is staged and hidden by the index's bits is not what runs; the files are."""
    require_bwrap()
    clean = git_state(repo)
    forge_index(str(repo))
    # Plain git is fooled: it takes the forged staged text for what is on disk.
    assert _git(repo, "diff", "--name-only") == ""

    state = git_state(repo)
    snapshot = take_snapshot(repo, tmp_path / "store")

    for name in ("exp.py", "exp2.py"):
        assert (snapshot.root / name).read_text() == f"print('honest {name}')\n"
    assert b"honest exp.py" in snapshot.diff and b"forged" not in snapshot.diff
    assert state.dirty and state.diff_sha256 not in (None, clean.diff_sha256)


def test_host_git_refuses_clearly_without_bubblewrap(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostgit, "which", lambda name, path=None: None)
    with pytest.raises(hostgit.HostGitError, match="apt-get install bubblewrap"):
        git_state(repo)
    assert "bubblewrap" in (hostgit.missing_requirement() or "")


# Through the real paths: launch, a remote-run snapshot, session end, audit -------------------

runtime = attacks.runtime  # real bwrap and real Docker, as the other attack tests
workspace = attacks.workspace

AGENT = """
import json, os, subprocess, sys
ws, markers = {ws!r}, {markers!r}
{source}
os.chdir(ws)
{steps}
job = subprocess.run(["remote-run", "--wait", "--", "python3", "exp.py"],
                     capture_output=True, text=True)
print(json.dumps({{"job": [job.returncode, job.stdout[-2000:], job.stderr[-2000:]]}}))
"""


def _session(tmp_path: Path, ws: Path, runtime: str, steps: str, *functions: object) -> tuple:
    """Launch a session whose agent runs ``steps`` (with ``functions`` defined) and then one job;
    returns the record, what the agent printed, the job's run and the ledger URL."""
    settings = Settings(
        state_dir=tmp_path / "state",
        sandbox=SandboxSettings(runtime=runtime, image=IMAGE, network="none"),  # type: ignore[arg-type]
        research=ResearchSettings(protected_paths=PROTECTED),
        cluster=ClusterSettings(job_runtime=runtime),  # type: ignore[arg-type]
    )
    source = "\n".join(textwrap.dedent(inspect.getsource(f)) for f in functions)  # type: ignore[arg-type]
    code = AGENT.format(ws=str(ws), markers=str(tmp_path / "markers"), source=source, steps=steps)
    record = launch(
        LaunchRequest(
            workspace=ws,
            runtime=runtime,  # type: ignore[arg-type]
            command=["python3", "-c", code],
            settings=settings,
            broker=True,
            record_in_ledger=True,
            capture_output=True,
        )
    )
    session_dir = SessionStore(tmp_path / "state" / "sessions").path(record.id)
    out = (session_dir / "stdout.txt").read_text()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, out + (session_dir / "stderr.txt").read_text()
    url = f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}"
    with open_ledger(url) as ledger:
        submitted = ledger.events(kind=EventKind.run_submitted)
        run = ledger.run(str(submitted[0].run_id)) if submitted else None
    return record, json.loads(lines[-1]), run, url, settings


def _committed(ws: Path, runtime: str) -> None:
    (ws / "exp.py").write_text("print('committed exp.py')\n")
    (ws / "exp2.py").write_text("print('committed exp2.py')\n")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-qm", "v1")
    if runtime == "docker":
        subprocess.run(["chown", "-R", "1000:1000", str(ws)], check=True)


def test_no_planted_git_setting_runs_on_the_host_at_launch_submit_session_end_or_audit(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    _committed(workspace, runtime)
    markers = tmp_path / "markers"
    markers.mkdir()
    _secret_repository(tmp_path)
    steps = "plant(ws, markers)\nopen('exp.py', 'w').write(\"print('edited exp.py')\\n\")\n"
    record, seen, run, url, settings = _session(tmp_path, workspace, runtime, steps, plant)
    ctx = CheckContext(
        config=AuditConfig(protected_paths=PROTECTED),
        workspace=Workspace(root=workspace, settings=settings),
        session_id=record.id,
        git_plants=LedgerRuns(url),
        divergences=LedgerRuns(url),
    )
    findings = [f for f in Checker(ctx).finish() if f.check == "git-indirection-planted"]

    assert sorted(p.name for p in markers.iterdir()) == []
    assert seen["job"][0] == 0 and run is not None, seen
    assert Path(str(run.run_dir), "stdout.log").read_text() == "edited exp.py\n"
    assert record.git_commit_after is not None and record.git_dirty_after
    with open_ledger(url) as ledger:
        (event,) = ledger.events(session_id=record.id, kind=EventKind.git_indirection_planted)
    paths = {e["path"] for e in event.payload["entries"]}
    assert {".git/commondir", ".git/worktrees", ".git/objects/info/alternates", "sub"} <= paths
    assert any("your own git commands" in note for note in record.notes)
    assert len(findings) == 1 and findings[0].severity is Severity.ERROR
    assert ".git/commondir" in findings[0].message


def test_jobs_run_the_files_not_what_a_forged_index_says(
    tmp_path: Path, workspace: Path, runtime: str
) -> None:
    _committed(workspace, runtime)
    record, seen, run, _, _ = _session(tmp_path, workspace, runtime, "forge_index(ws)", forge_index)
    assert seen["job"][0] == 0 and run is not None, seen
    assert Path(str(run.run_dir), "stdout.log").read_text() == "honest exp.py\n"
    diff = Path(run.extra["snapshot_diff"]).read_bytes()  # stored once per submission
    assert b"honest exp.py" in diff and b"forged" not in diff
    assert record.git_dirty_after
    assert not any("your own git commands" in note for note in record.notes), record.notes
