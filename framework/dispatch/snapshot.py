"""The workspace as it was when a job was submitted: a commit, a diff, and a read-only copy.

A job runs later than it is submitted (queued behind others, or a whole array), and the agent keeps
editing the workspace meanwhile. So at submit time the broker records what the job will run:

- ``commit``: HEAD of the workspace (None before the first commit);
- ``tree``: a git tree of the working tree as it is (tracked files with their edits, plus
  untracked files that are not ignored), hashed from the files' contents by git confined in a view
  of the host's own (framework/hostgit.py): the agent's index, config, refs and stash are neither
  used nor touched;
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
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from framework import hostgit, safefs

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
MAX_UNTRACKED_FILE_BYTES = 64 << 20
MAX_IGNORED_ENTRIES = 256
MAX_SNAPSHOT_BYTES = 16 << 30
"""The most the copy of one snapshot may hold (the tar stream ``git archive`` writes)."""


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
        path.write_bytes(self.diff)  # host-path: the broker's submission dir in the state dir
        return path


def is_git_workspace(workspace: Path) -> bool:
    """The workspace is the top of a git repository of its own (``.git/HEAD`` exists). Not so for
    a directory inside another repository, nor for one where a sandbox has only created mount
    points under ``.git/`` (the read-only ``.git/hooks``): git would find the enclosing repository
    there, and its jobs run from the live workspace instead of a snapshot."""
    return safefs.is_regular_file(workspace, ".git/HEAD")


def take_snapshot(workspace: Path, store: Path) -> Snapshot:
    """Record the workspace's current state and make sure its read-only copy exists in ``store``.

    Every git command runs through :func:`framework.hostgit.content_view`: confined, with none
    of the agent's git configuration, and with an index that starts from ``read-tree HEAD`` (not
    a copy of the agent's ``.git/index``), so every file is hashed from its contents and a
    forged stat cache cannot make the snapshot hold anything but what is on disk."""
    workspace = workspace.resolve()
    store.mkdir(parents=True, exist_ok=True)  # host-path: the snapshot store (state_dir)
    try:
        with hostgit.content_view(workspace, parent=store) as view:
            tree = _working_tree(view)
            base = view.commit or EMPTY_TREE
            diff_args = ("diff", "--binary", "--no-ext-diff", "--no-textconv", base, tree)
            diff = view.run(*diff_args).checked("git diff")
            root = _materialize(view, store, tree)
            ignored = _ignored_entries(view)
    except hostgit.HostGitError as exc:
        raise SnapshotError(str(exc)) from None
    for relative in ignored:
        _placeholder(root, relative, workspace)
    return Snapshot(commit=view.commit, tree=tree, diff=diff, root=root, ignored=ignored)


def _working_tree(view: hostgit.View) -> str:
    """The tree of the work tree as it is: HEAD's entries re-hashed from the files, plus the
    untracked files that are not ignored (each within the size limit)."""
    untracked = view.run("ls-files", "-z", "--others", "--exclude-standard").checked("git ls-files")
    for name in untracked.decode(errors="surrogateescape").split("\0"):
        try:
            info = safefs.stat_beneath(view.repo, name) if name else None
        except OSError:
            continue  # a link on the way, or gone since the listing: git decides below
        if (
            info is not None
            and stat.S_ISREG(info.st_mode)
            and info.st_size > MAX_UNTRACKED_FILE_BYTES
        ):
            raise SnapshotError(
                f"untracked file {name} is {info.st_size / 2**20:.0f} MiB, over the snapshot "
                f"limit of {MAX_UNTRACKED_FILE_BYTES >> 20} MiB: list it in .gitignore (ignored "
                "paths are visible to jobs read-only, not copied) or commit it"
            )
    view.run("add", "-A", "--", ".").checked("git add (temporary index)")
    return hostgit.object_id(view.run("write-tree").checked("git write-tree"), "git write-tree")


def _materialize(view: hostgit.View, store: Path, tree: str) -> Path:
    root = store / tree
    if root.is_dir():  # host-path: the snapshot store, read-only in jobs
        return root
    staging = store / f".{tree}.{secrets.token_hex(4)}"
    staging.mkdir(parents=True)  # host-path: a fresh random staging dir in the snapshot store
    try:
        with (
            view.stream("archive", "--format=tar", tree, limit=MAX_SNAPSHOT_BYTES) as out,
            # host-path: no path: a tar stream read from git's pipe
            tarfile.open(fileobj=out, mode="r|") as archive,  # type: ignore[call-overload]
        ):
            _extract(archive, staging)
        try:
            staging.rename(root)  # host-path: the snapshot store
        except OSError:
            # host-path: the snapshot store; not a concurrent submit that won the race
            if not root.is_dir():
                raise
    finally:
        if staging.exists():  # host-path: the staging dir in the snapshot store
            shutil.rmtree(staging, ignore_errors=True)  # host-path: the staging dir
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


def _ignored_entries(view: hostgit.View) -> list[str]:
    """Ignored files and directories (a directory once, not its contents); no symlinks, no .git."""
    out = view.run(
        "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"
    ).checked("git ls-files --ignored")
    entries = []
    for name in sorted(out.decode(errors="surrogateescape").split("\0")):
        name = name.rstrip("/")
        if not name or name.split("/")[0] == ".git" or "__pycache__" in name.split("/"):
            continue
        if not _reached_without_links(view.repo, name):
            continue  # a link could point anywhere on the host; jobs never get it
        entries.append(name)
    if len(entries) > MAX_IGNORED_ENTRIES:
        raise SnapshotError(
            f"the workspace has {len(entries)} separate git-ignored paths (jobs see each as a "
            f"mount; the limit is {MAX_IGNORED_ENTRIES}): ignore whole directories instead, "
            f"e.g. data/ rather than data/*.bin (first few: {', '.join(entries[:5])})"
        )
    return entries


def _reached_without_links(workspace: Path, relative: str) -> bool:
    try:
        info = safefs.stat_beneath(workspace, relative)
    except OSError:
        return False
    return info is not None and not stat.S_ISLNK(info.st_mode)


def _placeholder(root: Path, relative: str, workspace: Path) -> None:
    """An empty file or directory in the copy, where the live ignored path gets mounted. The copy
    holds the links the agent committed: nothing is created through one (safefs)."""
    try:
        if safefs.stat_beneath(root, relative) is not None:
            return  # something (a link included) is already there
    except OSError:
        return  # a link or a file on the way: never create anything through it
    try:
        live = safefs.stat_beneath(workspace, relative)
    except OSError:
        live = None
    if live is not None and stat.S_ISDIR(live.st_mode):
        os.close(safefs.open_directory(root, relative, create=True))
    else:
        safefs.write_new(root, relative, b"", create_dirs=True)
