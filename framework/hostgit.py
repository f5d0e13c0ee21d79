"""Every git command the host runs on the agent's repository: confined, and blind to its config.

The agent can write nearly all of the workspace's ``.git`` (only ``.git/config`` and
``.git/hooks/`` are read-only in the sandbox), and git follows many files there to configuration
and programs: ``commondir``, ``gitdir:`` files, ``worktrees/``, ``objects/info/alternates``,
``info/attributes``, includes, nested repositories. ``-c`` overrides cannot switch off all of what
they lead to (clean/smudge/process filters, ``diff.external``, textconv, fsmonitor, hooks). So two
things hold here, each enough on its own for what git is known to run:

1. **None of the agent's git configuration is read.** Content is read through a *view*
   (:func:`content_view`): a git directory of the host's own in a fresh scratch directory (its own
   config, no hooks, an empty ``info/attributes``). Its only links to the agent's repository are
   ``objects/info/alternates`` (objects are data), a copy of the agent's ``info/exclude``
   (patterns, data too) and the agent's files as its work tree. HEAD is read by this module
   (:func:`read_head`: the ``HEAD`` file, a loose ref or ``packed-refs``), never by git in the
   agent's git directory. The view's index starts from ``read-tree HEAD``, never from the agent's
   ``.git/index``: its entries carry no stat data and no assume-unchanged or skip-worktree bits,
   so git hashes every file from its contents and a forged index changes nothing.
2. **Every git process runs in a throwaway bubblewrap sandbox** (:func:`sandbox_argv`), in case
   (1) misses something: every namespace new (no network, no host processes, no IPC), no
   capabilities, no nested user namespaces, ``--die-with-parent``, ``--new-session``, the host's
   ``/usr`` read-only, an ``/etc`` with only the dynamic linker's files, no ``/proc``, an
   environment built from nothing, the repository **read-only**, and writable only the host-owned
   scratch directory of that one call. Output comes back over a pipe, bounded in size and time.

Which uid reads the workspace: bubblewrap without setuid maps the one uid inside (65534) to the
host uid that started it, without any capability, so git reads files by their permission bits as
that uid: a bwrap session's files are the launcher's, a Docker session's belong to the container
uid and are world-readable as git and the agent's tools create them (a file the agent made
unreadable to others makes its own snapshot fail, with an error naming it). Dropping to another
host uid instead would need that uid to reach the workspace (under ``/root`` when root launched).

Without bubblewrap, host git refuses (:class:`HostGitError`) rather than run unconfined, whatever
the session's runtime; ``agentic-researcher doctor`` says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from shutil import which
from typing import IO

from framework import safefs

SANDBOX_UID = 65534
"""The uid and gid git runs as inside its sandbox (``nobody``), mapped to the caller's host uid."""
TIMEOUT_S = 600.0
OUTPUT_LIMIT = 256 << 20
"""The most bytes one git command may write to stdout before it is stopped (a diff or listing)."""
_STDERR_LIMIT = 64 << 10
_SMALL_FILE_LIMIT = 1 << 20
_SYMREF_DEPTH = 5
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF_NAME = re.compile(r"refs/[A-Za-z0-9._/+-]{1,240}")

GIT_CONFIG = """\
[core]
\trepositoryformatversion = 0
\tbare = false
\tfsmonitor = false
\thooksPath = /dev/null
\tpager = cat
\teditor = false
\tsshCommand = false
\taskPass = false
\tautocrlf = false
\tuntrackedCache = false
\tsplitIndex = false
\tsparseCheckout = false
\tattributesFile = /dev/null
\texcludesFile = /dev/null
[diff]
\tignoreSubmodules = dirty
[status]
\tsubmoduleSummary = false
[gc]
\tauto = 0
[protocol]
\tallow = never
[submodule]
\trecurse = false
"""
"""The view's own configuration: nothing here runs a program. ``diff.ignoreSubmodules = dirty``
keeps git from starting a ``git status`` inside each nested repository (which would read that
repository's own, agent-written, config)."""

OVERRIDES = (
    *("-c", "safe.directory=*"),
    *("-c", "core.fsmonitor=false"),
    *("-c", "core.hooksPath=/dev/null"),
    *("-c", "core.pager=cat"),
    *("-c", "core.sshCommand=false"),
    *("-c", "credential.helper="),
    *("-c", "protocol.allow=never"),
    "--no-pager",
)
"""On every command line as well; the view's own config and the sandbox are what count.
(``safe.directory``: the work tree may belong to another uid than the one git runs as.)"""

SANDBOX_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/nonexistent",
    "LC_ALL": "C",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_PAGER": "cat",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_OPTIONAL_LOCKS": "0",
    "GIT_EXEC_PATH": "/hostgit-exec",
}
"""The whole environment git sees, plus the ``GIT_DIR``-style variables of the call."""

_BWRAP_SEARCH_PATH = os.environ.get("PATH") or "/usr/bin:/bin"
"""Where bubblewrap is looked for: the PATH this process started with (a later change of the
process's PATH, such as the one a job runner gets, does not move the host's own git)."""
_CHILD_EXEC_DIR = SANDBOX_ENV["GIT_EXEC_PATH"]
_ROOT_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d")


class HostGitError(RuntimeError):
    """A host-side git command could not run confined, or failed; the message says what to do."""


class UnreadableHead(HostGitError):
    """HEAD names a commit the view cannot read from the repository's own ``.git/objects`` (its
    objects are elsewhere, e.g. behind a planted ``commondir`` or ``alternates``)."""

    def __init__(self, commit: str, detail: str) -> None:
        super().__init__(f"HEAD {commit} cannot be read from .git/objects: {detail}")
        self.commit = commit


@dataclass(frozen=True)
class GitRun:
    returncode: int
    stdout: bytes
    stderr: str

    def checked(self, what: str) -> bytes:
        if self.returncode != 0:
            raise HostGitError(f"{what} failed: {self.stderr.strip() or self.returncode}")
        return self.stdout


def missing_requirement() -> str | None:
    """Why host git cannot run confined here (for ``doctor``), or None when it can: a confined
    ``git version`` is tried on an empty directory."""
    with tempfile.TemporaryDirectory(prefix=".hostgit-probe-") as empty:
        try:
            probe = run(Path(empty), "version", timeout=60, limit=4096)
        except (HostGitError, OSError) as exc:
            return str(exc)
    if probe.returncode != 0:
        return f"git in a bubblewrap sandbox failed: {probe.stderr.strip() or probe.returncode}"
    return None


def _binaries() -> tuple[str, str]:
    bwrap = which("bwrap", path=_BWRAP_SEARCH_PATH)
    if bwrap is None:
        raise HostGitError(
            "bubblewrap (bwrap) is not installed, and the host runs git on the agent's repository "
            "only inside a bubblewrap sandbox, whatever the session's runtime (Docker and Podman "
            "sessions too): install it (apt-get install bubblewrap) and allow unprivileged user "
            "namespaces (see `agentic-researcher doctor`)"
        )
    git = which("git", path="/usr/bin:/bin")
    if git is None:
        raise HostGitError("git is not installed in /usr/bin: apt-get install git")
    return bwrap, git


def sandbox_argv(
    repo: Path, git_args: list[str], env: Mapping[str, str], scratch: Path | None = None
) -> list[str]:
    """The bwrap command line that runs ``git git_args`` on ``repo`` (read-only, at its own path,
    also the working directory), with ``scratch`` writable and ``env`` added to
    :data:`SANDBOX_ENV`."""
    bwrap, git = _binaries()
    args = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        *("--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)),
        *("--cap-drop", "ALL"),
        "--die-with-parent",
        "--new-session",
    ]
    for name in _ROOT_DIRS:
        host = Path("/") / name
        if host.is_symlink():  # host-path: the host's /bin, /lib... (system dirs)
            args += ["--symlink", os.readlink(host), f"/{name}"]  # host-path: a system dir
        elif host.is_dir():  # host-path: a system dir
            args += ["--ro-bind", str(host), f"/{name}"]
    args += ["--dev", "/dev", "--dir", "/etc"]
    # Git starts a child git for some work on nested repositories (``git add`` runs ``git
    # status`` inside each gitlink), and that child would read the nested repository's own,
    # agent-written, config. Every child git is ``true`` instead: it reads nothing and reports
    # nothing (the gitlink's commit, which git reads itself, is what a snapshot records).
    args += ["--dir", _CHILD_EXEC_DIR, "--symlink", "/usr/bin/true", f"{_CHILD_EXEC_DIR}/git"]
    for entry in _ETC_ENTRIES:
        args += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
    args += ["--ro-bind", str(repo), str(repo)]
    if scratch is not None:
        args += ["--bind", str(scratch), str(scratch)]
    args += ["--remount-ro", "/", "--chdir", str(repo), "--clearenv"]
    for name, value in sorted({**SANDBOX_ENV, **env}.items()):
        args += ["--setenv", name, value]
    return [*args, "--", git, *OVERRIDES, *git_args]


@contextlib.contextmanager
def _started(
    repo: Path, git_args: list[str], env: Mapping[str, str], scratch: Path | None, timeout: float
) -> Iterator[tuple[subprocess.Popen[bytes], list[bytes]]]:
    """A running confined git with its stderr collected (bounded) on a thread; killed after
    ``timeout`` seconds or when the caller leaves early."""
    proc = subprocess.Popen(
        sandbox_argv(repo, git_args, env, scratch),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr: list[bytes] = []
    err_pipe = proc.stderr

    def drain() -> None:
        kept = 0
        while chunk := err_pipe.read(1 << 16):
            if kept < _STDERR_LIMIT:
                stderr.append(chunk[: _STDERR_LIMIT - kept])
                kept += len(stderr[-1])

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        yield proc, stderr
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.wait()
        reader.join()
        err_pipe.close()
    if timer.finished.is_set() and proc.returncode < 0:
        raise HostGitError(f"git {git_args[0]} on {repo} took longer than {timeout:.0f} s")


def run(
    repo: Path,
    *git_args: str,
    env: Mapping[str, str] | None = None,
    scratch: Path | None = None,
    timeout: float = TIMEOUT_S,
    limit: int = OUTPUT_LIMIT,
) -> GitRun:
    """Run one confined git command and collect its output (more than ``limit`` bytes of stdout
    raises :class:`HostGitError`)."""
    chunks: list[bytes] = []
    size = 0
    with _started(repo, list(git_args), env or {}, scratch, timeout) as (proc, stderr):
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 16):
            size += len(chunk)
            if size > limit:
                raise HostGitError(
                    f"git {git_args[0]} on {repo} wrote more than {limit >> 20} MiB; stopped"
                )
            chunks.append(chunk)
        proc.wait()
    return GitRun(proc.returncode, b"".join(chunks), b"".join(stderr).decode(errors="replace"))


class Bounded:
    """A read-only stream that raises once more than ``limit`` bytes came through it."""

    def __init__(self, raw: IO[bytes], limit: int, what: str) -> None:
        self.raw, self.limit, self.what, self.size = raw, limit, what, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.size += len(data)
        if self.size > self.limit:
            raise HostGitError(f"{self.what} wrote more than {self.limit >> 20} MiB; stopped")
        return data


@contextlib.contextmanager
def stream(
    repo: Path,
    *git_args: str,
    env: Mapping[str, str] | None = None,
    scratch: Path | None = None,
    timeout: float = TIMEOUT_S,
    limit: int = OUTPUT_LIMIT,
) -> Iterator[Bounded]:
    """A confined git command's stdout to read as it comes (``git archive``); leaving the block
    waits for git and raises :class:`HostGitError` if it failed."""
    what = f"git {git_args[0]} on {repo}"
    with _started(repo, list(git_args), env or {}, scratch, timeout) as (proc, stderr):
        assert proc.stdout is not None
        yield Bounded(proc.stdout, limit, what)
        while proc.stdout.read(1 << 16):  # what the reader left (tar padding), discarded
            pass
        proc.wait()
    if proc.returncode != 0:
        message = b"".join(stderr).decode(errors="replace").strip()
        raise HostGitError(f"{what} failed: {message or proc.returncode}")


def object_id(out: bytes, what: str) -> str:
    """The object id ``what`` printed (it ends up in host paths: only hex passes)."""
    name = out.decode(errors="replace").strip()
    if not _OBJECT_ID.fullmatch(name):
        raise HostGitError(f"{what} printed {name[:80]!r}, not an object id")
    return name


def read_head(repo: Path) -> str | None:
    """The commit id HEAD of ``repo`` names, read as data from ``.git/HEAD``, a loose ref under
    ``.git/refs`` or ``.git/packed-refs`` (no link followed, no git run); None before the first
    commit or when HEAD is not one of those forms (a reftable repository, a planted oddity)."""
    target = _small_file(repo, ".git/HEAD")
    for _ in range(_SYMREF_DEPTH):
        if target is None:
            return None
        text = target.strip()
        if _OBJECT_ID.fullmatch(text):
            return text
        ref = text.removeprefix("ref:").strip() if text.startswith("ref:") else None
        if ref is None or not _REF_NAME.fullmatch(ref) or ".." in ref:
            return None
        target = _small_file(repo, f".git/{ref}") or _packed_ref(repo, ref)
    return None


def _small_file(repo: Path, relative: str) -> str | None:
    try:
        return safefs.read_text(repo, relative, limit=_SMALL_FILE_LIMIT)
    except OSError:
        return None


def _packed_ref(repo: Path, ref: str) -> str | None:
    try:
        data = safefs.read_bytes(repo, ".git/packed-refs", limit=64 << 20)
    except OSError:
        return None
    for line in data.decode(errors="replace").splitlines():
        oid, _, name = line.partition(" ")
        if name == ref and _OBJECT_ID.fullmatch(oid):
            return oid
    return None


@dataclass(frozen=True)
class View:
    """The agent's work tree seen through a git directory of the host's own (see the module
    docstring); ``commit`` is the agent's HEAD, already read into the view's fresh index."""

    repo: Path
    scratch: Path
    commit: str | None

    @property
    def env(self) -> dict[str, str]:
        return {
            "GIT_DIR": str(self.scratch / "git"),
            "GIT_WORK_TREE": str(self.repo),
            "GIT_INDEX_FILE": str(self.scratch / "index"),
        }

    def run(self, *git_args: str, limit: int = OUTPUT_LIMIT) -> GitRun:
        return run(self.repo, *git_args, env=self.env, scratch=self.scratch, limit=limit)

    def stream(
        self, *git_args: str, limit: int = OUTPUT_LIMIT
    ) -> contextlib.AbstractContextManager[Bounded]:
        return stream(self.repo, *git_args, env=self.env, scratch=self.scratch, limit=limit)


@contextlib.contextmanager
def content_view(repo: Path, parent: Path | None = None) -> Iterator[View]:
    """A :class:`View` of ``repo`` in a fresh scratch directory under ``parent`` (host-owned; the
    system temporary directory when None), removed afterwards. New objects (a snapshot's blobs
    and trees) go to the scratch directory; the agent's objects are only read."""
    _binaries()  # refuse before creating anything when git cannot run confined
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)  # host-path: a host-owned dir (the store)
    scratch = Path(tempfile.mkdtemp(prefix=".hostgit-", dir=parent))
    try:
        git_dir = scratch / "git"
        for sub in ("refs", "objects/info", "info"):
            (git_dir / sub).mkdir(parents=True)  # host-path: the scratch dir
        (git_dir / "HEAD").write_text("ref: refs/heads/host-view\n")  # host-path: the scratch dir
        (git_dir / "config").write_text(GIT_CONFIG)  # host-path: the scratch dir
        (git_dir / "info" / "attributes").write_bytes(b"")  # host-path: the scratch dir
        # host-path: the scratch dir (the excludes are read through safefs)
        (git_dir / "info" / "exclude").write_bytes(_agent_excludes(repo))
        alternates = git_dir / "objects" / "info" / "alternates"
        alternates.write_text(f"{repo / '.git' / 'objects'}\n")  # host-path: the scratch dir
        view = View(repo=repo, scratch=scratch, commit=read_head(repo))
        if view.commit is not None:
            read = view.run("read-tree", view.commit)
            if read.returncode != 0:
                raise UnreadableHead(view.commit, read.stderr.strip())
        yield view
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # host-path: the scratch dir


def _agent_excludes(repo: Path) -> bytes:
    """The repository's ``info/exclude`` (ignore patterns: data), read without following links;
    empty when missing, a link or oversized."""
    try:
        return safefs.read_bytes(repo, ".git/info/exclude", limit=_SMALL_FILE_LIMIT)
    except OSError:
        return b""
