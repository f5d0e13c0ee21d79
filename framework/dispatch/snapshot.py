"""The workspace as it was when a job was submitted: a commit, a diff, and a read-only copy.

A job runs later than it is submitted (queued behind others, or a whole array), and the agent keeps
editing the workspace meanwhile. So at submit time the broker records what the job will run:

- ``commit``: HEAD of the workspace (None before the first commit);
- ``tree``: a git tree of the working tree as it is (tracked files with their edits, plus
  untracked files that are not ignored), built with a temporary index so the agent's index, refs
  and stash are untouched;
- ``snapshot.diff``: ``git diff --binary COMMIT TREE``, in every run directory, so
  ``git checkout COMMIT && git apply snapshot.diff`` reproduces the sources of the run;
- a copy of the tree in ``<state>/dispatch/snapshots/<tree>/`` (content-addressed: an array, or
  repeated submits of the same state, share one copy), which the job sandbox mounts read-only at the
  workspace's own path;
- ``ignored``: the git-ignored entries of the workspace (virtual environments, data, caches). They
  are not copied; the job sandbox mounts them read-only from the live workspace, so a job sees the
  data as it is when the job starts, not when it was submitted.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
MAX_UNTRACKED_FILE_BYTES = 64 << 20
MAX_IGNORED_ENTRIES = 256
_SAFE_GIT = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null")


def _trust(workspace: Path) -> tuple[str, str]:
    """The broker may run as another user than the workspace's owner (a Docker session's files
    belong to the container uid); git then refuses the repository unless it is named safe. With
    fsmonitor and hooks off above, reading it runs nothing of the agent's."""
    return ("-c", f"safe.directory={workspace}")


class SnapshotError(RuntimeError):
    """The workspace cannot be snapshotted; the message says what to change."""


@dataclass(frozen=True)
class Snapshot:
    commit: str | None
    tree: str
    diff: bytes = field(repr=False)
    root: Path
    ignored: list[str]

    @property
    def diff_sha256(self) -> str | None:
        return hashlib.sha256(self.diff).hexdigest() if self.diff else None

    def store_diff(self, path: Path) -> Path:
        """Write the diff to ``path``, once per submission: each run copies it into its run dir
        as ``snapshot.diff`` when it starts (see runner.prepare_run_dir)."""
        path.write_bytes(self.diff)
        return path


def _objects_env(workspace: Path, store: Path) -> dict[str, str]:
    """New objects (the snapshot's blobs and trees) go to a store of the broker's own; the
    workspace's objects are only read. The broker may run as another user than the repository's
    owner (a Docker session), and objects it wrote into .git/objects would then be files the
    agent's own `git add` cannot write next to."""
    objects = store / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "GIT_OBJECT_DIRECTORY": str(objects),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(workspace / ".git" / "objects"),
    }


def _git(
    workspace: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", *_SAFE_GIT, *_trust(workspace), "-C", str(workspace), *args],
        capture_output=True,
        check=False,
        env=env,
    )


def _checked(proc: subprocess.CompletedProcess[bytes], what: str) -> bytes:
    if proc.returncode != 0:
        raise SnapshotError(f"{what} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def is_git_workspace(workspace: Path) -> bool:
    """The workspace is the top of a git repository of its own (``.git/HEAD`` exists). Not so for
    a directory inside another repository, nor for one where a sandbox has only created mount
    points under ``.git/`` (the read-only ``.git/hooks``): git would find the enclosing repository
    there, and its jobs run from the live workspace instead of a snapshot."""
    return (workspace / ".git" / "HEAD").is_file()


def take_snapshot(workspace: Path, store: Path) -> Snapshot:
    """Record the workspace's current state and make sure its read-only copy exists in ``store``."""
    workspace = workspace.resolve()
    head = _git(workspace, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    commit = head.stdout.decode().strip() or None
    tree = _working_tree(workspace, store, commit)
    diff = _checked(
        _git(
            workspace,
            "diff",
            "--binary",
            "--no-ext-diff",
            "--no-textconv",
            commit or EMPTY_TREE,
            tree,
            env=_objects_env(workspace, store),
        ),
        "git diff",
    )
    root = _materialize(workspace, store, tree)
    ignored = _ignored_entries(workspace)
    for relative in ignored:
        _placeholder(root, relative, workspace / relative)
    return Snapshot(commit=commit, tree=tree, diff=diff, root=root, ignored=ignored)


def _working_tree(workspace: Path, store: Path, commit: str | None) -> str:
    untracked = _checked(
        _git(workspace, "ls-files", "-z", "--others", "--exclude-standard"), "git ls-files"
    )
    for name in untracked.decode(errors="surrogateescape").split("\0"):
        if not name:
            continue
        path = workspace / name
        try:
            size = path.lstat().st_size
        except OSError:
            continue
        if size > MAX_UNTRACKED_FILE_BYTES and not path.is_symlink():
            raise SnapshotError(
                f"untracked file {name} is {size / 2**20:.0f} MiB, over the snapshot limit of "
                f"{MAX_UNTRACKED_FILE_BYTES >> 20} MiB: list it in .gitignore (ignored paths are "
                "visible to jobs read-only, not copied) or commit it"
            )
    store.mkdir(parents=True, exist_ok=True)
    index = store / f".index-{os.getpid()}-{secrets.token_hex(4)}"
    real_index = workspace / ".git" / "index"
    env = {**_objects_env(workspace, store), "GIT_INDEX_FILE": str(index)}
    try:
        if real_index.is_file():
            shutil.copyfile(
                real_index, index
            )  # keeps git's stat cache: unchanged files are not re-read
        elif commit:
            _checked(_git(workspace, "read-tree", commit, env=env), "git read-tree")
        _checked(_git(workspace, "add", "-A", "--", ".", env=env), "git add (temporary index)")
        return _checked(_git(workspace, "write-tree", env=env), "git write-tree").decode().strip()
    finally:
        index.unlink(missing_ok=True)


def _materialize(workspace: Path, store: Path, tree: str) -> Path:
    root = store / tree
    if root.is_dir():
        return root
    staging = store / f".{tree}.{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    try:
        with subprocess.Popen(
            [
                "git",
                *_SAFE_GIT,
                *_trust(workspace),
                "-C",
                str(workspace),
                "archive",
                "--format=tar",
                tree,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_objects_env(workspace, store),
        ) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                _extract(archive, staging)
        if proc.returncode != 0:
            raise SnapshotError(f"git archive {tree} failed with exit code {proc.returncode}")
        try:
            staging.rename(root)
        except OSError:
            if not root.is_dir():  # not a concurrent submit that won the race
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _extract(archive: tarfile.TarFile, into: Path) -> None:
    """Extract ``archive`` (read as a stream) under ``into``, where nothing may land outside
    ``into`` and no file keeps a setuid, setgid or sticky bit or group/other write permission:
    the agent chose the archive's contents. That is tarfile's ``tar`` filter, which Python 3.11
    has from 3.11.4 on; an older 3.11 (Debian 12 ships 3.11.2) gets :func:`_extract_checked`."""
    if hasattr(tarfile, "tar_filter"):
        archive.extractall(into, filter="tar")
    else:
        _extract_checked(archive, into)


UNSAFE_MODE_BITS = 0o7022
"""setuid, setgid, sticky, and group and other write: cleared from every extracted member."""


def _extract_checked(archive: tarfile.TarFile, into: Path) -> None:
    """The guarantees of tarfile's ``tar`` filter, checked member by member; stricter in that
    only files, directories and symbolic links are extracted (``git archive`` writes nothing
    else) and an absolute name fails the snapshot instead of losing its leading slash."""
    root = os.path.realpath(into)
    for member in archive:
        name = member.name
        if not (member.isfile() or member.isdir() or member.issym()):
            raise SnapshotError(f"snapshot archive: {name!r} is not a file, directory or link")
        target = os.path.realpath(os.path.join(root, name))  # through links extracted before
        if os.path.isabs(name) or os.path.commonpath([root, target]) != root:
            raise SnapshotError(f"snapshot archive: {name!r} would be written outside {into}")
        member.mode &= ~UNSAFE_MODE_BITS
        archive.extract(member, into, set_attrs=not member.issym())


def _ignored_entries(workspace: Path) -> list[str]:
    """Ignored files and directories (a directory once, not its contents); no symlinks, no .git."""
    out = _checked(
        _git(
            workspace,
            "ls-files",
            "-z",
            "--others",
            "--ignored",
            "--exclude-standard",
            "--directory",
        ),
        "git ls-files --ignored",
    )
    entries = []
    for name in sorted(out.decode(errors="surrogateescape").split("\0")):
        name = name.rstrip("/")
        if not name or name.split("/")[0] == ".git" or "__pycache__" in name.split("/"):
            continue
        if (workspace / name).is_symlink():
            continue  # a link could point anywhere on the host; jobs never get it
        entries.append(name)
    if len(entries) > MAX_IGNORED_ENTRIES:
        raise SnapshotError(
            f"the workspace has {len(entries)} separate git-ignored paths (jobs see each as a "
            f"mount; the limit is {MAX_IGNORED_ENTRIES}): ignore whole directories instead, "
            f"e.g. data/ rather than data/*.bin (first few: {', '.join(entries[:5])})"
        )
    return entries


def _placeholder(root: Path, relative: str, live: Path) -> None:
    """An empty file or directory in the copy, where the live ignored path gets mounted."""
    target = root / relative
    if target.exists() or target.is_symlink():
        return
    current = root
    for part in Path(relative).parts[:-1]:
        current = current / part
        if current.is_symlink():
            return  # never create anything through a link the copy contains
    target.parent.mkdir(parents=True, exist_ok=True)
    if live.is_dir():
        target.mkdir(exist_ok=True)
    else:
        target.touch()
