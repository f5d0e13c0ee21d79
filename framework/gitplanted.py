"""What a session left in the repository that the user's own later git commands would follow.

The host's git reads the agent's repository through a confined view and runs nothing of it
(framework/hostgit.py). The user's own ``git status`` or ``git commit`` in the workspace after a
session does neither: it reads ``.git`` as it finds it. At session end :func:`planted` lists what
there would make that git read configuration from elsewhere or run a program, so the launcher can
warn (terminal, session notes, a ``git_indirection_planted`` ledger event the audit reports).

Everything is read as data, without following links: the files under ``.git`` by name, the
repository's config as text, the index by a confined git (``ls-files``) on a copy of it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from framework import hostgit, safefs

INDIRECTION_FILES = {
    "commondir": "points git at another directory's config, hooks, objects and refs",
    "gitdir": "a worktree back-link: git treats the repository as another one's worktree",
    "worktrees": "linked worktrees, each with a git directory (and config) of its own",
    "modules": "submodule git directories, each with a config of its own",
    "objects/info/alternates": "git reads objects from the directories it lists",
    "objects/info/http-alternates": "git reads objects from the URLs it lists",
    "info/attributes": "can assign filter, diff and merge drivers to any path",
    "info/grafts": "rewrites the history git shows",
    "config.worktree": "a second config file, read with extensions.worktreeConfig",
    "refs/replace": "replaces objects in everything git shows",
}
"""Names in ``.git`` that make git read configuration, objects or history from elsewhere."""

EXECUTABLE_SETTINGS = (
    "include.path",
    "includeif.*.path",
    "core.fsmonitor",
    "core.hookspath",
    "core.sshcommand",
    "core.pager",
    "core.editor",
    "core.askpass",
    "core.gitproxy",
    "core.worktree",
    "core.attributesfile",
    "core.alternaterefscommand",
    "extensions.worktreeconfig",
    "filter.*.clean",
    "filter.*.smudge",
    "filter.*.process",
    "diff.external",
    "diff.*.textconv",
    "diff.*.command",
    "merge.*.driver",
    "difftool.*.cmd",
    "mergetool.*.cmd",
    "alias.*",
    "pager.*",
    "credential.helper",
    "credential.*.helper",
    "sequence.editor",
    "gpg.program",
    "gpg.*.program",
    "remote.*.uploadpack",
    "remote.*.receivepack",
    "uploadpack.packobjectshook",
    "submodule.*.update",
)
"""Config keys (``section[.subsection].key`` in lower case, ``*`` for any part) that make git run a
program or read another config file."""

_CONFIG_LIMIT = 1 << 20
_INDEX_LIMIT = 256 << 20
_SECTION = re.compile(r'\s*\[\s*([A-Za-z0-9.-]+)(?:\s+"((?:[^"\\]|\\.)*)")?\s*\](.*)')
_KEY = re.compile(r"\s*([A-Za-z][A-Za-z0-9-]*)\s*(?:=(.*))?")
_FALSE = {"false", "no", "off", "0", ""}


class PlantedEntry(BaseModel):
    """One thing in the repository a later git would follow: its path (relative to the
    workspace) and why it matters."""

    path: str
    why: str


def shown(text: str) -> str:
    """``text`` (a name the agent chose) with control and non-ASCII characters escaped, so that
    printing it cannot drive the reader's terminal."""
    return json.dumps(text)[1:-1]


def planted(repo: Path, since: float) -> list[PlantedEntry]:
    """Everything in ``repo`` that would make the user's own git read another config or run a
    program: indirection files and links in ``.git``, nested repositories git would enter, and,
    in the read-only ``.git/config`` and ``.git/hooks``, what changed at or after ``since`` (a Unix
    time: the session's start; a file's ctime cannot be set back)."""
    try:
        info = safefs.stat_beneath(repo, ".git")
    except OSError:
        info = None
    if info is None:
        return []
    if not stat.S_ISDIR(info.st_mode):
        return [PlantedEntry(path=".git", why="not a directory: git follows it elsewhere")]
    found = [
        PlantedEntry(path=f".git/{name}", why=why)
        for name, why in INDIRECTION_FILES.items()
        if _present(repo, f".git/{name}")
    ]
    found += [
        PlantedEntry(path=f".git/{name}", why="a link: git follows it out of the repository")
        for name in _links_in(repo, ".git")
    ]
    if _changed_since(repo, ".git/config", since):
        found += [
            PlantedEntry(
                path=".git/config",
                why=f"sets {shown(key)}: git runs a program or reads another file",
            )
            for key in _executable_settings(repo)
        ]
    found += _new_hooks(repo, since)
    found += _nested_repositories(repo)
    return found


def _present(repo: Path, relative: str) -> bool:
    try:
        info = safefs.stat_beneath(repo, relative)
    except OSError:
        return True  # a link on the way: something is there
    if info is None:
        return False
    return not (stat.S_ISREG(info.st_mode) and info.st_size == 0)


def _links_in(repo: Path, relative: str) -> list[str]:
    try:
        names = safefs.listdir(repo, relative)
    except OSError:
        return []
    links = []
    for name in names:
        try:
            info = safefs.stat_beneath(repo, f"{relative}/{name}")
        except OSError:
            continue
        if info is not None and stat.S_ISLNK(info.st_mode):
            links.append(shown(name))
    return links


def _changed_since(repo: Path, relative: str, since: float) -> bool:
    try:
        info = safefs.stat_beneath(repo, relative)
    except OSError:
        return True
    return info is not None and info.st_ctime >= since


def _executable_settings(repo: Path) -> list[str]:
    try:
        text = safefs.read_text(repo, ".git/config", limit=_CONFIG_LIMIT)
    except OSError as exc:
        return [f"(nothing readable: {exc.strerror or exc})"]
    found = []
    for key, value in config_entries(text):
        if key == "core.fsmonitor" and value.strip().strip('"').lower() in _FALSE:
            continue
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in EXECUTABLE_SETTINGS):
            found.append(key)
    return found


def config_entries(text: str) -> Iterator[tuple[str, str]]:
    """``(section[.subsection].key, value)`` for each entry of a git config file, names in lower
    case (a subsection keeps its case). Enough of the format to find names: sections,
    subsections old and new style, comments, continuation lines."""
    section = ""
    continued = False
    for line in text.splitlines():
        if continued:
            continued = line.rstrip().endswith("\\")
            continue
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        header = _SECTION.match(line)
        if header:
            name, sub, rest = header.groups()
            first, _, old_sub = name.partition(".")
            section = first.lower() + (f".{old_sub.lower()}" if old_sub else "")
            section += f".{sub}" if sub is not None else ""
            stripped = rest.strip()
            if not stripped or stripped[0] in "#;":
                continue
            line = rest
        entry = _KEY.match(line)
        if entry and section:
            value = entry.group(2) or ""
            continued = value.rstrip().endswith("\\")
            yield f"{section}.{entry.group(1).lower()}", value


def _new_hooks(repo: Path, since: float) -> list[PlantedEntry]:
    try:
        hooks = safefs.listdir(repo, ".git/hooks")
    except FileNotFoundError:
        return []
    except OSError:
        return [
            PlantedEntry(
                path=".git/hooks", why="a link or not a directory: git runs hooks from elsewhere"
            )
        ]
    found = []
    for name in hooks:
        if not name.endswith(".sample") and _changed_since(repo, f".git/hooks/{name}", since):
            found.append(
                PlantedEntry(
                    path=f".git/hooks/{shown(name)}",
                    why="created or changed during the session: git runs it",
                )
            )
    return found


def _nested_repositories(repo: Path) -> list[PlantedEntry]:
    """Gitlinks of the agent's index and of HEAD whose directory holds a ``.git``: the user's
    ``git status`` starts a git inside each, which reads that repository's own config."""
    gitlinks: set[str] = set()
    try:
        with hostgit.content_view(repo) as view:
            gitlinks |= _gitlinks(view.run("ls-files", "-z", "-s").stdout)
            try:
                index = safefs.read_bytes(repo, ".git/index", limit=_INDEX_LIMIT)
            except OSError:
                index = b""
            if index:
                copy = view.scratch / "agent-index"
                copy.write_bytes(index)  # host-path: the host's scratch dir of the view
                listing = hostgit.run(
                    repo,
                    "ls-files",
                    "-z",
                    "-s",
                    env={**view.env, "GIT_INDEX_FILE": str(copy)},
                    scratch=view.scratch,
                )
                gitlinks |= _gitlinks(listing.stdout)
    except hostgit.HostGitError as exc:
        return [
            PlantedEntry(path=".git", why=f"not checked for nested repositories: {shown(str(exc))}")
        ]
    return [
        PlantedEntry(
            path=shown(path),
            why="a nested repository: git status runs git inside it, with its own config",
        )
        for path in sorted(gitlinks)
        if _present_dir_entry(repo, f"{path}/.git")
    ]


def _gitlinks(listing: bytes) -> set[str]:
    """Paths of the ``160000`` (gitlink) entries of ``git ls-files -s -z`` output."""
    found = set()
    for record in listing.split(b"\0"):
        meta, _, path = record.partition(b"\t")
        if meta.startswith(b"160000 ") and path:
            found.add(os.fsdecode(path))
    return found


def _present_dir_entry(repo: Path, relative: str) -> bool:
    try:
        return safefs.stat_beneath(repo, relative) is not None
    except OSError:
        return False
