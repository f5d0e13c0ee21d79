"""Link-safe, confined file access for host-side code acting on trees the agent can write.

The workspace, the agent's home, the run directories and the broker's channel directory are
hostile: any name in them may be a symbolic link planted to make a host-side step (running with
the host's privileges) read, write or chown something else, and any name may be swapped between a
check and a use. Every host-side access to those trees goes through this module; a test
(``tests/unit/test_safefs_call_sites.py``) fails on host-side code that touches them another way.

How it stays safe:

- A path is always a trusted ``root`` (a directory the host chose, opened with ``O_NOFOLLOW``)
  plus a relative name. The name is walked one component at a time from the root's file
  descriptor with ``openat`` (``os.open(..., dir_fd=...)``), every component opened with
  ``O_NOFOLLOW`` (and ``O_DIRECTORY`` for directories). A symbolic link anywhere on the way,
  ``..``, an absolute name or an empty component raises :class:`UnsafePath`; nothing resolves
  outside the root.
- What is checked is what is used: callers get the open descriptor and ``fstat``/``fchown``/read it,
  so swapping a name after the check changes nothing.
- New files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW``; atomic replacement writes a
  temporary file under an unpredictable name (``secrets``) and renames it over the target within the
  same directory descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW


class UnsafePath(OSError):
    """A name inside an agent-writable tree is a link, leaves its root, or is not what it must be."""


def _parts(relative: str | os.PathLike[str]) -> list[str]:
    text = os.fspath(relative)
    if text.startswith("/"):
        raise UnsafePath(errno.EINVAL, "absolute name where a relative one is required", text)
    parts = [p for p in PurePosixPath(text).parts if p != "."]
    if any(p == ".." for p in parts):
        raise UnsafePath(errno.EINVAL, "'..' in a name that must stay beneath its root", text)
    return parts


def open_root(root: Path) -> int:
    """A descriptor of the trusted root directory itself; the root must not be a link."""
    try:
        return os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise _explain(exc, str(root)) from exc


def _explain(exc: OSError, name: str) -> OSError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return UnsafePath(exc.errno, "a symbolic link or a non-directory on the way", name)
    return exc


def _walk(root_fd: int, parts: list[str], create: bool, mode: int, shown: str) -> int:
    """Open the directory ``parts`` beneath ``root_fd`` without following links; optionally
    create missing directories. Returns a new descriptor (the caller closes it)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except OSError as exc:
        os.close(fd)
        raise _explain(exc, shown) from exc


@contextlib.contextmanager
def open_dir(
    root: Path, relative: str | os.PathLike[str] = "", create: bool = False, mode: int = 0o755
) -> Iterator[int]:
    """The directory ``root/relative`` as a descriptor, never through a link."""
    root_fd = open_root(root)
    try:
        fd = _walk(root_fd, _parts(relative), create, mode, f"{root}/{os.fspath(relative)}")
    finally:
        os.close(root_fd)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _parent(
    root: Path, relative: str | os.PathLike[str], create: bool = False
) -> Iterator[tuple[int, str]]:
    parts = _parts(relative)
    if not parts:
        raise UnsafePath(errno.EINVAL, "a file name is required", os.fspath(relative))
    with open_dir(root, PurePosixPath(*parts[:-1]) if parts[:-1] else "", create=create) as fd:
        yield fd, parts[-1]


def open_file(
    root: Path,
    relative: str | os.PathLike[str],
    flags: int = os.O_RDONLY,
    mode: int = 0o644,
    create_dirs: bool = False,
) -> int:
    """A descriptor for the file ``root/relative`` opened with ``flags``; a link at any component
    (the last one included) raises :class:`UnsafePath`. With ``O_RDONLY`` the file must be a regular
    file (a FIFO or device planted in its place is refused without blocking)."""
    with _parent(root, relative, create=create_dirs) as (dir_fd, name):
        try:
            fd = os.open(name, flags | _NOFOLLOW | os.O_NONBLOCK, mode, dir_fd=dir_fd)
        except OSError as exc:
            raise _explain(exc, f"{root}/{os.fspath(relative)}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafePath(errno.EINVAL, "not a regular file", f"{root}/{os.fspath(relative)}")
    os.set_blocking(fd, True)
    return fd


def read_bytes(root: Path, relative: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The file's contents; over ``limit`` bytes raises :class:`UnsafePath` (EFBIG)."""
    fd = open_file(root, relative)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise UnsafePath(errno.EFBIG, f"larger than {limit} bytes", f"{root}/{relative}")
    return data


def read_text(root: Path, relative: str | os.PathLike[str], limit: int | None = None) -> str:
    return read_bytes(root, relative, limit).decode("utf-8", errors="replace")


def stat_beneath(root: Path, relative: str | os.PathLike[str]) -> os.stat_result | None:
    """``lstat`` of ``root/relative`` reached without following links on the way; None when it does
    not exist. The result describes the entry itself (a link shows as a link)."""
    parts = _parts(relative)
    if not parts:
        return os.lstat(root)
    try:
        with _parent(root, relative) as (dir_fd, name):
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_regular_file(root: Path, relative: str | os.PathLike[str]) -> bool:
    """Exists, is a regular file, and is reached through no link (never follows one)."""
    try:
        info = stat_beneath(root, relative)
    except (UnsafePath, NotADirectoryError):
        return False
    return info is not None and stat.S_ISREG(info.st_mode)


def write_new(
    root: Path,
    relative: str | os.PathLike[str],
    data: bytes,
    mode: int = 0o644,
    create_dirs: bool = False,
) -> None:
    """Create ``root/relative`` with ``data``; fails if anything (a link included) is there."""
    fd = open_file(root, relative, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode, create_dirs)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def open_append(root: Path, relative: str | os.PathLike[str], mode: int = 0o644) -> int:
    """A descriptor appending to ``root/relative`` (created if missing), never through a link."""
    return open_file(root, relative, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)


def replace(
    root: Path,
    relative: str | os.PathLike[str],
    data: bytes,
    mode: int = 0o644,
    fsync: bool = False,
    create_dirs: bool = False,
) -> None:
    """Atomically replace ``root/relative`` with ``data``: a temporary file with an unpredictable
    name next to it, created ``O_EXCL``, then renamed over the target in the same directory. A link
    in the target's place is replaced, never followed."""
    with _parent(root, relative, create=create_dirs) as (dir_fd, name):
        temp = f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), mode)  # exactly ``mode``, whatever the umask
                fh.write(data)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        if fsync:
            os.fsync(dir_fd)


def listdir(root: Path, relative: str | os.PathLike[str] = "") -> list[str]:
    """Names in the directory ``root/relative`` (reached without following links)."""
    with open_dir(root, relative) as fd:
        return sorted(os.listdir(fd))


def remove(root: Path, relative: str | os.PathLike[str]) -> bool:
    """Unlink the entry (a link itself, never its target); False when it was not there."""
    with _parent(root, relative) as (dir_fd, name):
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
    return True


def chown_tree(root: Path, relative: str | os.PathLike[str], uid: int, gid: int) -> None:
    """``chown`` the directory ``root/relative`` and everything beneath it, by descriptor: a link
    is re-owned itself (``lchown``), never what it points to, and nothing outside is touched."""
    with open_dir(root, relative) as fd:
        _chown_fd_tree(fd, uid, gid)


def _chown_fd_tree(dir_fd: int, uid: int, gid: int) -> None:
    os.fchown(dir_fd, uid, gid)
    for name in os.listdir(dir_fd):
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue  # swapped for something else since the stat: leave it
            try:
                _chown_fd_tree(child, uid, gid)
            finally:
                os.close(child)
        else:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def copy_out(
    root: Path, relative: str | os.PathLike[str], dest: Path, limit: int | None = None
) -> int:
    """Copy the regular file ``root/relative`` (never through a link) to the host path ``dest``
    (a host-owned location, replaced atomically), streaming. Returns the bytes copied; over
    ``limit`` bytes raises :class:`UnsafePath` (EFBIG) and leaves ``dest`` as it was."""
    source = os.fdopen(open_file(root, relative), "rb")
    temp = dest.parent / f".{dest.name}.{secrets.token_hex(8)}.tmp"
    copied = 0
    try:
        with source, open(temp, "xb") as out:  # host-path: the host's own destination
            while chunk := source.read(1 << 20):
                copied += len(chunk)
                if limit is not None and copied > limit:
                    raise UnsafePath(
                        errno.EFBIG, f"larger than {limit} bytes", f"{root}/{relative}"
                    )
                out.write(chunk)
        os.chmod(temp, 0o600)
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
    return copied
