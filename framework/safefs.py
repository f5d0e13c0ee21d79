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
import fnmatch
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW
MAX_DEPTH = 128
"""How deep the tree walks (:func:`regular_files`, :func:`chown_tree`) go."""


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


def open_directory(
    root: Path, relative: str | os.PathLike[str] = "", create: bool = False, mode: int = 0o755
) -> int:
    """A new descriptor (the caller closes it) of the directory ``root/relative``, never reached
    through a link; ``create`` makes missing directories on the way."""
    root_fd = open_root(root)
    try:
        return _walk(root_fd, _parts(relative), create, mode, f"{root}/{os.fspath(relative)}")
    finally:
        os.close(root_fd)


@contextlib.contextmanager
def open_dir(
    root: Path, relative: str | os.PathLike[str] = "", create: bool = False, mode: int = 0o755
) -> Iterator[int]:
    """The directory ``root/relative`` as a descriptor, never through a link."""
    fd = open_directory(root, relative, create, mode)
    try:
        yield fd
    finally:
        os.close(fd)


def open_path(root: Path, relative: str | os.PathLike[str]) -> int:
    """An ``O_PATH`` descriptor (the caller closes it) of the directory or regular file
    ``root/relative``, reached through no link: what a mount is made from (``bwrap --ro-bind-fd``,
    ``mount /proc/self/fd/N``), so that the object checked is the object mounted, whatever the
    name points to by then. Nothing is opened for reading (a FIFO cannot block it)."""
    shown = f"{root}/{os.fspath(relative)}"
    parts = _parts(relative)
    if not parts:
        return os.open(root, os.O_PATH | _NOFOLLOW | os.O_DIRECTORY)
    with _parent(root, relative) as (dir_fd, name):
        try:
            fd = os.open(name, os.O_PATH | _NOFOLLOW, dir_fd=dir_fd)
        except OSError as exc:
            raise _explain(exc, shown) from exc
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind not in (stat.S_IFDIR, stat.S_IFREG):
        os.close(fd)
        what = "a symbolic link" if kind == stat.S_IFLNK else "neither a directory nor a file"
        raise UnsafePath(errno.ELOOP if kind == stat.S_IFLNK else errno.EINVAL, what, shown)
    return fd


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
    if flags & (os.O_WRONLY | os.O_RDWR) and info.st_nlink > 1:
        # A hard link to a file elsewhere would let a write land outside the tree.
        os.close(fd)
        raise UnsafePath(errno.EMLINK, "a file with other hard links", f"{root}/{relative}")
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


def read_range(root: Path, relative: str | os.PathLike[str], offset: int, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file from ``offset`` (a log being tailed)."""
    fd = open_file(root, relative)
    try:
        return os.pread(fd, limit, offset)
    finally:
        os.close(fd)


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


def copy_in(source: Path, root: Path, relative: str | os.PathLike[str], mode: int = 0o644) -> bool:
    """Copy the host file ``source`` (a host-owned path) to a new file ``root/relative``, created
    ``O_EXCL`` beneath the root, streaming. False, and nothing written, when anything (a link
    included) is already there."""
    try:
        fd = open_file(root, relative, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with open(source, "rb") as src, os.fdopen(fd, "wb") as out:  # host-path: the host's own file
        while chunk := src.read(1 << 20):
            out.write(chunk)
    return True


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


def regular_files(
    root: Path, relative: str | os.PathLike[str] = "", limit: int = 1000, max_entries: int = 100_000
) -> list[str]:
    """Regular files beneath the directory ``root/relative`` (names relative to it, depth first,
    each directory in sorted order), at most ``limit`` of them; links are neither listed nor
    followed, and at most ``max_entries`` names are looked at, so a hostile tree costs bounded
    work."""
    found: list[str] = []
    seen = 0

    def visit(dir_fd: int, prefix: str, depth: int) -> None:
        nonlocal seen
        for name in sorted(os.listdir(dir_fd)):
            seen += 1
            if len(found) >= limit or seen > max_entries:
                return
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                found.append(prefix + name)
            elif stat.S_ISDIR(info.st_mode) and depth < MAX_DEPTH:
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError:
                    continue  # swapped for something else since the stat: not a directory of ours
                try:
                    visit(child, f"{prefix}{name}/", depth + 1)
                finally:
                    os.close(child)

    with open_dir(root, relative) as fd:
        visit(fd, "", 0)
    return found


def glob(root: Path, pattern: str) -> list[str]:
    """Names (relative to ``root``) of the regular files matching ``pattern``, whose components
    are ``fnmatch`` patterns (``*`` never crosses a ``/``); no link is followed on the way or
    matched at the end. Sorted."""
    parts = _parts(pattern)
    matches: list[str] = []

    def visit(dir_fd: int, prefix: str, rest: list[str]) -> None:
        head, tail = rest[0], rest[1:]
        names = fnmatch.filter(os.listdir(dir_fd), head) if _magic(head) else [head]
        for name in names:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not tail:
                if stat.S_ISREG(info.st_mode):
                    matches.append(prefix + name)
            elif stat.S_ISDIR(info.st_mode):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError:
                    continue
                try:
                    visit(child, f"{prefix}{name}/", tail)
                finally:
                    os.close(child)

    if not parts:
        return []
    try:
        with open_dir(root) as fd:
            visit(fd, "", parts)
    except FileNotFoundError:
        return []
    return sorted(matches)


def _magic(component: str) -> bool:
    return any(c in component for c in "*?[")


def chown_entry(root: Path, relative: str | os.PathLike[str], uid: int, gid: int) -> None:
    """``chown`` the directory or file ``root/relative`` itself, by descriptor; a link in its
    place (or on the way) raises :class:`UnsafePath` and nothing changes owner."""
    fd = open_path(root, relative)
    try:
        # fchown does not take an O_PATH descriptor; the empty name with AT_EMPTY_PATH does.
        os.chown(f"/proc/self/fd/{fd}", uid, gid, follow_symlinks=True)
    finally:
        os.close(fd)


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
    is re-owned itself (``lchown``), never what it points to, and nothing outside is touched.
    Entries already owned by ``uid:gid`` are left alone; deeper than :data:`MAX_DEPTH` raises
    :class:`UnsafePath` (a hostile tree must not exhaust the stack or the descriptors)."""
    with open_dir(root, relative) as fd:
        _chown_fd_tree(fd, uid, gid, 0, f"{root}/{os.fspath(relative)}")


def _chown_fd_tree(dir_fd: int, uid: int, gid: int, depth: int, shown: str) -> None:
    if depth > MAX_DEPTH:
        raise UnsafePath(errno.ELOOP, f"more than {MAX_DEPTH} directories deep", shown)
    info = os.fstat(dir_fd)
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.fchown(dir_fd, uid, gid)
    for name in os.listdir(dir_fd):
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue  # swapped for something else since the stat: leave it
            try:
                _chown_fd_tree(child, uid, gid, depth + 1, f"{shown}/{name}")
            finally:
                os.close(child)
        elif (info.st_uid, info.st_gid) != (uid, gid):
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def walk(
    root: Path, relative: str | os.PathLike[str] = ""
) -> Iterator[tuple[str, os.stat_result, int | None]]:
    """Every entry beneath the directory ``root/relative`` (itself excluded), depth first in name
    order, never through a link: ``(name relative to root, stat, descriptor)``. A regular file
    comes with a read-only descriptor of what was opened and its ``fstat`` (valid until the next
    item: the walk closes it); a directory with its ``fstat``, entered through its descriptor; a
    link, FIFO, socket or device with its ``lstat`` and None (never opened, never followed)."""
    with open_dir(root, relative) as fd:
        yield from _walk_fd(fd, PurePosixPath(*_parts(relative)))


def _walk_fd(dir_fd: int, base: PurePosixPath) -> Iterator[tuple[str, os.stat_result, int | None]]:
    for name in sorted(os.listdir(dir_fd)):
        shown = (base / name).as_posix()
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            child = _open_entry(name, _DIR_FLAGS, dir_fd, shown)
            try:
                yield shown, os.fstat(child), None
                yield from _walk_fd(child, base / name)
            finally:
                os.close(child)
        elif stat.S_ISREG(info.st_mode):
            fd = _open_entry(name, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd, shown)
            try:
                opened = os.fstat(fd)  # what is read, even if the name was swapped since lstat
                yield shown, opened, fd if stat.S_ISREG(opened.st_mode) else None
            finally:
                os.close(fd)
        else:
            yield shown, info, None


def _open_entry(name: str, flags: int, dir_fd: int, shown: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:  # swapped for a link (ELOOP, ENOTDIR) between the lstat and the open
        raise _explain(exc, shown) from exc


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


def tree_size(root: Path, relative: str | os.PathLike[str] = "") -> int:
    """Bytes the directory ``root/relative`` and everything beneath it take on disk (allocated
    blocks, each inode once: a sparse or hard-linked file counts what it really takes), walked by
    descriptor without following links; deeper than :data:`MAX_DEPTH` raises
    :class:`UnsafePath`."""
    with open_dir(root, relative) as fd:
        seen: set[tuple[int, int]] = set()
        total = os.fstat(fd).st_blocks * 512
        for _, _, info in _post_order(fd, f"{root}/{os.fspath(relative)}"):
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
        return total


def remove_tree(root: Path, relative: str | os.PathLike[str]) -> int:
    """Remove the directory ``root/relative`` and everything beneath it, by descriptor: a link is
    unlinked itself, never followed, and nothing outside the directory is touched (a name swapped
    for a link mid-walk is removed as the link it now is). Returns the bytes it took on disk
    (as :func:`tree_size` counts them); 0 when it was not there."""
    with _parent(root, relative) as (parent_fd, name):
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise _explain(exc, f"{root}/{os.fspath(relative)}") from exc
        try:
            seen: set[tuple[int, int]] = set()
            freed = os.fstat(fd).st_blocks * 512
            for dir_fd, entry, info in _post_order(fd, f"{root}/{os.fspath(relative)}"):
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    freed += info.st_blocks * 512
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISDIR(info.st_mode):
                        os.rmdir(entry, dir_fd=dir_fd)
                    else:
                        os.unlink(entry, dir_fd=dir_fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=parent_fd)
    return freed


def _post_order(top_fd: int, shown: str) -> Iterator[tuple[int, str, os.stat_result]]:
    """Every entry beneath the directory ``top_fd`` as ``(its directory's descriptor, name,
    lstat)``, a directory after its contents (so that a caller may remove each as it comes).
    Iterative, one open descriptor per level: a wide tree costs no descriptors, a deep one is
    refused past :data:`MAX_DEPTH`."""
    levels: list[tuple[int, Iterator[str], str, os.stat_result | None]] = [
        (os.dup(top_fd), iter(sorted(os.listdir(top_fd))), "", None)
    ]
    try:
        while levels:
            fd, names, own_name, own_info = levels[-1]
            name = next(names, None)
            if name is None:
                levels.pop()
                os.close(fd)
                if levels and own_info is not None:
                    yield levels[-1][0], own_name, own_info
                continue
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(info.st_mode):
                yield fd, name, info
                continue
            if len(levels) > MAX_DEPTH:
                raise UnsafePath(errno.ELOOP, f"more than {MAX_DEPTH} directories deep", shown)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:  # swapped for a link or a file since the stat: an entry, not a level
                yield fd, name, os.stat(name, dir_fd=fd, follow_symlinks=False)
                continue
            levels.append((child, iter(sorted(os.listdir(child))), name, os.fstat(child)))
    finally:
        for fd, *_ in levels:
            os.close(fd)
