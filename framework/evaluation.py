"""The evaluation a session runs with: its protected paths, hashed at launch and kept pristine.

The protected paths (``research.protected_paths``: evaluation scripts, test data, ``.git/config``
and hooks, the methodology manifest) are the judge of the agent's work. Read-only mounts keep the
agent from changing them inside its sandbox; this module makes what *jobs* run, and what the
*record* names, independent of the workspace altogether:

- at launch, :func:`capture` reads every protected path through :mod:`framework.safefs` (never
  through a link; a link or special file there is refused) and hashes each file while copying it
  into ``<state>/evaluation/<sha256>/`` on the host, content-addressed (an unchanged evaluation is
  stored once), so the copy is exactly what was hashed;
- jobs see that copy, read-only, at the protected paths (``jobsandbox.sandbox_plan``), and an
  empty read-only placeholder where a protected path was absent at launch;
- every run records the evaluation's sha256; at submit and at session end :func:`scan` hashes the
  workspace's protected paths again and :func:`divergence_payload` says what differs (an edit, a
  replacement, a removal or rename, a creation), which the broker and the launcher record in the
  ledger as ``evaluation_diverged`` and the audit reports as an error.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import secrets
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from framework import safefs

STORE_DIR = "evaluation"
"""Under the state dir: one directory per evaluation, named by its sha256."""
TREE = "tree"
MANIFEST = "manifest.json"
EMPTY_DIR = "empty-dir"
EMPTY_FILE = "empty-file"
SESSIONS_DIR = "sessions"
"""``sessions/<session id>``: the sha256 of the evaluation that session was launched with."""
MAX_CHANGES_RECORDED = 50
"""Changes listed one by one in an ``evaluation_diverged`` event; the rest are counted."""
_CHUNK = 1 << 20

Kind = Literal["file", "dir", "absent", "unsafe"]
"""``unsafe``: a symbolic link, FIFO, socket or device, or reached only through one."""


class EvaluationError(RuntimeError):
    """The protected paths cannot be captured; the message says which one and what to do."""


@dataclass(frozen=True)
class Entry:
    kind: Kind
    sha256: str | None = None
    executable: bool = False


@dataclass(frozen=True)
class Evaluation:
    """A captured evaluation: its hash, what it holds, and where its pristine copy lies."""

    sha256: str
    protected: tuple[str, ...]
    """The protected paths, workspace-relative, normalized (no trailing slash)."""
    entries: Mapping[str, Entry]
    """Each protected path and everything beneath it, by workspace-relative name."""
    root: Path
    """``<state>/evaluation/<sha256>``: the copy in ``tree/``, and the placeholders."""

    def source(self, name: str) -> Path:
        """The pristine copy of the protected path ``name`` (which must not be absent)."""
        return self.root / TREE / name

    def placeholder(self, directory: bool) -> Path:
        """An empty read-only directory or file, shown in place of a path absent at launch."""
        return self.root / (EMPTY_DIR if directory else EMPTY_FILE)


def store_of(state_dir: Path) -> Path:
    return state_dir / STORE_DIR


def protected_names(protected_paths: Iterable[str]) -> tuple[str, ...]:
    """Normalized workspace-relative names in config order, without duplicates and without those
    that lie inside another protected path (they are captured with it)."""
    names: list[str] = []
    for raw in protected_paths:
        name = posixpath.normpath(raw)
        if name in (".", "") or name.startswith("../") or name == "..":
            continue
        if name not in names:
            names.append(name)
    return tuple(n for n in names if not any(n.startswith(o + "/") for o in names if o != n))


def scan(root: Path, protected: Iterable[str]) -> dict[str, Entry]:
    """What the protected paths of the workspace ``root`` hold now, hashed, nothing followed."""
    return _collect(root, protected_names(protected), None)


def digest(entries: Mapping[str, Entry]) -> str:
    """The evaluation's sha256: every name with its kind, content hash and executable bit (not
    owners, times or other mode bits, which a copy does not keep)."""
    hasher = hashlib.sha256(b"agentic-researcher evaluation 1\n")
    for name in sorted(entries):
        entry = entries[name]
        row = [name, entry.kind, entry.sha256, entry.executable]
        hasher.update(json.dumps(row).encode() + b"\n")  # ASCII: odd names escaped, not lost
    return hasher.hexdigest()


def capture(root: Path, protected: Iterable[str], store: Path) -> Evaluation:
    """Hash the protected paths of ``root`` and keep their pristine copy in ``store`` (host-owned,
    outside the workspace). A link or special file at or above a protected path is refused.

    An evaluation already in the store is not copied again: hashing alone is ten times cheaper
    than hashing while copying (docs/security.md, "Host-side steps"), and the stored copy is, by
    its name, of exactly the contents just hashed."""
    names = protected_names(protected)
    entries = _collect(root, names, None)
    sha = digest(entries)
    # host-path: the evaluation store (state_dir/evaluation), host-only, read-only in jobs
    if not any(e.kind == "unsafe" for e in entries.values()) and (store / sha / MANIFEST).is_file():
        return Evaluation(sha, names, entries, store / sha)
    store.mkdir(parents=True, exist_ok=True)  # host-path: the evaluation store
    staging = store / f".staging-{secrets.token_hex(8)}"
    (staging / TREE).mkdir(parents=True)  # host-path: a fresh random staging dir in the store
    try:
        entries = _collect(root, names, staging / TREE)
        unsafe = [name for name, entry in entries.items() if entry.kind == "unsafe"]
        if unsafe:
            raise EvaluationError(
                f"protected path {shown(unsafe[0])} in {root} is, or is reached through, a "
                "symbolic link or a special file; a session may have planted it. Inspect it, "
                "replace it with the real file or directory, and try again"
            )
        sha = digest(entries)
        final = store / sha
        if final.is_dir():  # host-path: the evaluation store
            return Evaluation(sha, names, entries, final)
        (staging / EMPTY_DIR).mkdir(mode=0o555)  # host-path: the staging dir in the store
        (staging / EMPTY_FILE).touch(mode=0o444)  # host-path: the staging dir in the store
        manifest = {
            "sha256": sha,
            "protected": list(names),
            "entries": {n: [e.kind, e.sha256, e.executable] for n, e in sorted(entries.items())},
        }
        # host-path: the staging dir in the store
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        try:
            staging.rename(final)  # host-path: the evaluation store
        except OSError:
            # host-path: the store; not a concurrent capture of the same evaluation
            if not final.is_dir():
                raise
        return Evaluation(sha, names, entries, final)
    finally:
        if staging.exists():  # host-path: the staging dir in the store
            shutil.rmtree(staging, ignore_errors=True)  # host-path: the staging dir in the store


def pin_session(store: Path, session_id: str, evaluation: Evaluation) -> None:
    """Name ``evaluation`` as the one the session runs with (its broker reads it, and so does a
    broker restarted for the same session)."""
    sessions = store / SESSIONS_DIR
    sessions.mkdir(parents=True, exist_ok=True)  # host-path: the evaluation store
    temp = sessions / f".{session_id}.{secrets.token_hex(8)}"
    temp.write_text(evaluation.sha256 + "\n")  # host-path: the evaluation store
    os.replace(temp, sessions / session_id)  # host-path: the evaluation store


def session_evaluation(store: Path, session_id: str) -> Evaluation | None:
    """The evaluation pinned for ``session_id`` at its launch, or None (no such session: a job of
    the host user, or a session launched without one)."""
    if not session_id or "/" in session_id or session_id.startswith("."):
        return None
    try:
        sha = (store / SESSIONS_DIR / session_id).read_text().strip()  # host-path: the store
        data = json.loads((store / sha / MANIFEST).read_text())  # host-path: the store
    except (OSError, ValueError):
        return None
    entries = {n: Entry(kind, h, bool(x)) for n, (kind, h, x) in data["entries"].items()}
    if digest(entries) != sha:
        raise EvaluationError(
            f"the pristine copy {store / sha} does not match its own hash (edited on the host?); "
            "relaunch the session to capture the evaluation again"
        )
    return Evaluation(sha, tuple(data["protected"]), entries, store / sha)


def divergence(pristine: Evaluation, current: Mapping[str, Entry]) -> list[tuple[str, str]]:
    """``(name, what changed)`` for every entry of the protected paths that differs from the
    pristine copy, in name order."""
    changes: list[tuple[str, str]] = []
    for name in sorted(set(pristine.entries) | set(current)):
        before = pristine.entries.get(name, Entry("absent"))
        after = current.get(name, Entry("absent"))
        if before == after:
            continue
        if after.kind == "unsafe":
            change = "replaced by a symbolic link or special file"
        elif before.kind == "absent":
            change = "created"
        elif after.kind == "absent":
            change = "removed or renamed away"
        elif before.kind != after.kind:
            change = f"replaced: a {before.kind} became a {after.kind}"
        elif before.sha256 != after.sha256:
            change = "edited"
        else:
            change = "executable bit changed"
        changes.append((name, change))
    return changes


def divergence_payload(
    pristine: Evaluation, current: Mapping[str, Entry], when: str
) -> dict[str, Any] | None:
    """The ``evaluation_diverged`` ledger payload, or None when the workspace matches."""
    changes = divergence(pristine, current)
    if not changes:
        return None
    return {
        "evaluation_sha256": pristine.sha256,
        "current_sha256": digest(current),
        "when": when,
        "changes": [{"path": shown(n), "change": c} for n, c in changes[:MAX_CHANGES_RECORDED]],
        "changes_total": len(changes),
    }


def shown(name: str) -> str:
    """A name as valid UTF-8 text (undecodable bytes as ``\\xNN``); control characters are left
    for the printing side to escape (framework.textsafe)."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def _collect(root: Path, names: tuple[str, ...], copy_into: Path | None) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for name in names:
        try:
            info = safefs.stat_beneath(root, name)
        except (safefs.UnsafePath, NotADirectoryError):
            entries[name] = Entry("unsafe")
            continue
        if info is None:
            entries[name] = Entry("absent")
        elif stat.S_ISDIR(info.st_mode):
            entries[name] = Entry("dir")
            if copy_into is not None:
                # host-path: the staging dir in the store (the name is a real entry, no '..')
                (copy_into / name).mkdir(mode=0o755, parents=True)
            _collect_tree(root, name, copy_into, entries)
        elif stat.S_ISREG(info.st_mode):
            try:
                fd = safefs.open_file(root, name)
            except safefs.UnsafePath:
                entries[name] = Entry("unsafe")  # swapped since the stat
                continue
            with os.fdopen(fd, "rb") as fh:
                entries[name] = _file(fh, copy_into, name)
        else:
            entries[name] = Entry("unsafe")
    return entries


def _collect_tree(root: Path, top: str, copy_into: Path | None, entries: dict[str, Entry]) -> None:
    try:
        for name, info, fd in safefs.walk(root, top):
            if stat.S_ISDIR(info.st_mode):
                entries[name] = Entry("dir")
                if copy_into is not None:
                    (copy_into / name).mkdir(mode=0o755)  # host-path: the staging dir in the store
            elif fd is not None:
                with os.fdopen(os.dup(fd), "rb") as fh:
                    entries[name] = _file(fh, copy_into, name)
            else:
                entries[name] = Entry("unsafe")
    except safefs.UnsafePath as exc:
        # swapped for a link during the walk: the whole path is then not what was checked
        entries[exc.filename if isinstance(exc.filename, str) else top] = Entry("unsafe")


def _file(fh: io.BufferedReader, copy_into: Path | None, name: str) -> Entry:
    """Hash the open file, copying the very bytes hashed when ``copy_into`` is given."""
    executable = bool(os.fstat(fh.fileno()).st_mode & 0o111)
    if copy_into is None:
        return Entry("file", hashlib.file_digest(fh, "sha256").hexdigest(), executable)
    target = copy_into / name
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)  # host-path: the staging dir
    hasher = hashlib.sha256()
    with open(target, "xb") as out:  # host-path: the pristine copy in the host's state dir
        while chunk := fh.read(_CHUNK):
            hasher.update(chunk)
            out.write(chunk)
    os.chmod(target, 0o755 if executable else 0o644)  # host-path: the staging dir in the store
    return Entry("file", hasher.hexdigest(), executable)
