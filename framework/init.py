"""``agentic-researcher init``: turn a directory into a research repository, idempotently.

It creates the directory if needed, runs ``git init`` unless the directory is already inside a
work tree, and writes the workspace config, the methodology files for one agent CLI, skeletons
of ``report.tex`` and ``TODO.md``, and ``.gitignore`` entries.

Edits are detected with a manifest (``.agentic-researcher/init-manifest.json``) of the SHA-256 of
each file as init last wrote it. On a later run a file is

- created when missing;
- left alone when it already has the content init would write;
- replaced when it still has the content init last wrote (nobody edited it; the templates or
  settings changed);
- kept otherwise (someone edited it, or it existed before init), and reported; ``--force``
  replaces it, except ``report.tex`` and ``TODO.md``: they hold research content, so init only
  ever creates them.

The manifest lives in ``.agentic-researcher/``, a protected path the agent cannot write, so an
agent cannot make its edits look like init's.
"""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from framework import safefs
from framework.config import WORKSPACE_DIR_NAME, Settings, commented_template, load_settings
from framework.prompts import (
    TOOLS,
    PromptError,
    contained_target,
    render_files,
    render_skeletons,
    write_text_atomic,
)

MANIFEST_PATH = f"{WORKSPACE_DIR_NAME}/init-manifest.json"
CONFIG_PATH = f"{WORKSPACE_DIR_NAME}/config.toml"
GITIGNORE_HEADER = "# added by agentic-researcher init"
GITIGNORE_ENTRIES = (
    "__pycache__/",
    "*.py[cod]",
    ".venv/",
    "report.aux",
    "report.fdb_latexmk",
    "report.fls",
    "report.log",
    "report.out",
    "report.synctex.gz",
    ".claude/settings.local.json",
)


class InitError(RuntimeError):
    """The workspace cannot be set up; the message says why and what to do."""


class Manifest(BaseModel):
    """SHA-256 of each file as init last wrote it, keyed by workspace-relative path."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    files: dict[str, str] = {}


@dataclass
class InitReport:
    root: Path
    git: str = ""
    actions: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, action: str, path: str, note: str = "") -> None:
        self.actions.append((action, path, note))

    @property
    def kept(self) -> list[str]:
        return [path for action, path, _ in self.actions if action == "kept"]

    def lines(self) -> list[str]:
        out = [f"workspace  {self.root}", f"git        {self.git}"]
        for action, path, note in self.actions:
            out.append(f"{action:<10} {path}" + (f"  ({note})" if note else ""))
        return out


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_PATH
    if safefs.stat_beneath(root, MANIFEST_PATH) is None:
        return Manifest()
    try:
        text = safefs.read_text(root, MANIFEST_PATH, limit=MAX_FILE_BYTES)
        return Manifest.model_validate(json.loads(text))
    except (OSError, ValueError, ValidationError) as exc:
        raise InitError(
            f"{path} is unreadable or corrupt ({exc.__class__.__name__}); delete it and rerun "
            "`agentic-researcher init` (files you edited will then be kept and reported)"
        ) from None


def _ensure_git(root: Path) -> str:
    try:
        import git
    except ImportError as exc:
        raise InitError(
            f"git is needed to set up a research repository: {exc}; install git"
        ) from None
    try:
        repo = git.Repo(root, search_parent_directories=True)
    except git.InvalidGitRepositoryError:
        git.Repo.init(root)
        return "initialised an empty repository"
    top = repo.working_tree_dir
    if top is not None and Path(top).resolve() != root.resolve():
        return f"inside the existing repository at {top}"
    return "existing repository"


MAX_FILE_BYTES = 16 << 20
"""The most init reads of a workspace file it manages (the agent may have made it any size)."""


def _write(root: Path, relative: str, text: str) -> None:
    try:
        write_text_atomic(root, relative, text)
    except OSError as exc:
        raise InitError(
            f"cannot write {root / relative}: {exc}; remove the link or fix the permissions"
        ) from None


def _sync_file(
    root: Path,
    relative: str,
    text: str,
    manifest: Manifest,
    report: InitReport,
    *,
    force: bool,
    replaceable: bool,
) -> None:
    try:
        target = contained_target(root, relative)
    except PromptError as exc:
        raise InitError(str(exc)) from None
    wanted = _sha256(text)
    try:
        there = safefs.stat_beneath(root, relative)
    except OSError as exc:
        raise InitError(f"cannot write {target}: {exc}; remove the link and run again") from None
    if there is None:
        _write(root, relative, text)
        manifest.files[relative] = wanted
        report.add("created", relative)
        return
    if stat.S_ISDIR(there.st_mode):
        raise InitError(
            f"{target} is a directory, but init needs to write a file there; move it away"
        )
    try:
        # Never through a link: a planted CLAUDE.md -> /etc/shadow reads as not ours (None).
        current = _sha256(safefs.read_text(root, relative, limit=MAX_FILE_BYTES))
    except OSError:
        current = None
    if current == wanted:
        manifest.files[relative] = wanted
        report.add("unchanged", relative)
    elif current is not None and manifest.files.get(relative) == current:
        _write(root, relative, text)
        manifest.files[relative] = wanted
        report.add("updated", relative)
    elif force and replaceable:
        _write(root, relative, text)
        manifest.files[relative] = wanted
        report.add("overwrote", relative, "--force")
    elif replaceable:
        report.add("kept", relative, "edited since init wrote it; rerun with --force to replace it")
    else:
        report.add("kept", relative, "your content; init only creates this file")


def _sync_gitignore(root: Path, report: InitReport) -> None:
    try:
        contained_target(root, ".gitignore")  # refuses a .gitignore reached through a link
    except PromptError as exc:
        raise InitError(str(exc)) from None
    existing = ""
    if safefs.is_regular_file(root, ".gitignore"):
        existing = safefs.read_text(root, ".gitignore", limit=MAX_FILE_BYTES)
    present = {line.strip() for line in existing.splitlines()}
    missing = [entry for entry in GITIGNORE_ENTRIES if entry not in present]
    if not missing:
        report.add("unchanged", ".gitignore")
        return
    block = "\n".join([GITIGNORE_HEADER, *missing]) + "\n"
    separator = "" if not existing or existing.endswith("\n") else "\n"
    prefix = existing + separator + ("\n" if existing else "")
    _write(root, ".gitignore", prefix + block)
    report.add(
        "created" if not existing else "updated", ".gitignore", f"{len(missing)} entries added"
    )


def _sync_rendered(
    root: Path,
    settings: Settings,
    tool: str,
    manifest: Manifest,
    report: InitReport,
    *,
    force: bool,
) -> None:
    try:
        rendered = render_files(settings, tool, root)
    except PromptError as exc:
        raise InitError(str(exc)) from None
    for relative, text in sorted(rendered.items()):
        _sync_file(root, relative, text, manifest, report, force=force, replaceable=True)


def sync_methodology(root: Path, settings: Settings, tool: str, force: bool = False) -> InitReport:
    """Bring ``tool``'s instruction and command files in ``root`` up to date, keeping edited ones.

    For callers (such as a launcher) that refresh the methodology before each session: unlike
    :func:`framework.prompts.render_for_tool`, which always writes, this follows the same
    manifest rules as ``init`` and reports files it kept.
    """
    if tool not in TOOLS:
        raise InitError(f"unknown tool {tool!r}; choose one of: {', '.join(TOOLS)}")
    report = InitReport(root=root, git="not checked")
    manifest = _read_manifest(root)
    before = manifest.model_copy(deep=True)
    try:
        _sync_rendered(root, settings, tool, manifest, report, force=force)
    except OSError as exc:
        raise InitError(f"cannot write into {root}: {exc}") from None
    finally:
        if manifest != before:
            _write(root, MANIFEST_PATH, manifest.model_dump_json(indent=2) + "\n")
    return report


def init_workspace(path: Path, tool: str | None, force: bool) -> InitReport:
    """Set up ``path`` as a research repository for ``tool`` (default: the configured agent)."""
    if tool is not None and tool not in TOOLS:
        raise InitError(f"unknown tool {tool!r}; choose one of: {', '.join(TOOLS)}")
    root = path.expanduser().absolute()
    if root.exists() and not root.is_dir():  # host-path: the directory the user named for init
        raise InitError(f"{root} exists and is not a directory; pass a directory to init")
    try:
        root.mkdir(parents=True, exist_ok=True)  # host-path: the directory the user named for init
    except OSError as exc:
        raise InitError(f"cannot create {root}: {exc.strerror}") from None

    report = InitReport(root=root)
    report.git = _ensure_git(root)
    manifest = _read_manifest(root)
    before = manifest.model_copy(deep=True)

    try:
        _sync_file(
            root, CONFIG_PATH, commented_template(), manifest, report, force=force, replaceable=True
        )
        flags = {"agent": {"tool": tool}} if tool else None
        settings = load_settings(workspace=root, flags=flags).settings
        chosen = tool or settings.agent.tool
        _sync_rendered(root, settings, chosen, manifest, report, force=force)
        try:
            skeletons = render_skeletons(settings, chosen, root)
        except PromptError as exc:
            raise InitError(str(exc)) from None
        for relative, text in skeletons.items():
            _sync_file(root, relative, text, manifest, report, force=force, replaceable=False)
        _sync_gitignore(root, report)
    except OSError as exc:
        raise InitError(f"cannot write into {root}: {exc}") from None
    finally:
        if manifest != before:
            _write(root, MANIFEST_PATH, manifest.model_dump_json(indent=2) + "\n")
    return report
