"""Audit one session: resolve the input, stream its events through the checks, build the report."""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import zstandard

from framework.audit.checks import CHECKS, AuditConfig, CheckContext, Checker
from framework.audit.events import Event, EventRecord
from framework.audit.ledger import (
    DivergenceSource,
    GitPlantSource,
    LedgerRun,
    RejectionSource,
    RunSource,
)
from framework.audit.parallel import read_events
from framework.audit.readers import (
    ReaderStats,
    ReadState,
    TranscriptError,
    detect,
    transcript_files,
)
from framework.audit.report import AuditReport
from framework.audit.summary import SummaryBuilder
from framework.config import Settings
from framework.workspace import Workspace

UNREADABLE: tuple[type[BaseException], ...] = (
    OSError,  # permission, I/O error, a file replaced by a directory or removed while read
    sqlite3.DatabaseError,  # a truncated, damaged or hostile OpenCode database
    UnicodeDecodeError,
    RecursionError,  # JSON nested deeper than the decoder goes
    zstandard.ZstdError,  # a damaged .zst frame
)
"""What reading a hostile or damaged transcript can raise, whatever the reader. Anything else
is a bug of the audit (exit code 3)."""
TIMELINE_HEAD = 2000
TIMELINE_TAIL = 1000
SESSION_FILE = "session.json"


@dataclass(frozen=True)
class AuditInput:
    """What to read, resolved from a path or a session id."""

    files: list[Path]
    formats: list[str]
    label: str
    session_id: str | None = None
    workspace: Path | None = None


def config_from_settings(settings: Settings, **overrides: object) -> AuditConfig:
    """Audit configuration following the project settings (protected paths, uv, network policy)."""
    base = AuditConfig(
        protected_paths=list(settings.research.protected_paths),
        package_manager=settings.research.package_manager,
        network_policy=settings.sandbox.network,
    )
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def resolve(target: str, sessions_dir: Path | None = None) -> AuditInput:
    """A transcript file, a directory of transcripts, a session-store directory, or a session id."""
    path = Path(target).expanduser()
    session_id: str | None = None
    workspace: Path | None = None
    if not path.exists():
        candidate = sessions_dir / target if sessions_dir is not None else None
        if candidate is None or not candidate.is_dir():
            known = (
                sorted(p.name for p in sessions_dir.iterdir() if p.is_dir())[:20]
                if sessions_dir and sessions_dir.is_dir()
                else []
            )
            hint = (
                f"; sessions in {sessions_dir}: {', '.join(known)}"
                if known
                else f" (no session store at {sessions_dir})"
                if sessions_dir
                else ""
            )
            raise TranscriptError(
                f"{target!r} is neither a file, a directory nor a known session id{hint}"
            )
        path = candidate
        session_id = target
    meta_file = path / SESSION_FILE if path.is_dir() else None
    if meta_file is not None and meta_file.is_file():
        meta = _session_meta(meta_file)
        session_id = str(meta.get("session_id") or meta.get("id") or session_id or path.name)
        where = meta.get("workspace")
        if isinstance(where, str):
            workspace = Path(where)
    files = transcript_files(path)
    plan: list[tuple[Path, str]] = []
    problems = []
    for file in files:
        try:
            plan.append((file, detect(file)))
        except TranscriptError as exc:
            if len(files) == 1:
                raise
            problems.append(str(exc))
    if not plan:
        raise TranscriptError(
            f"{path}: none of its files is a transcript: " + "; ".join(problems[:3])
        )
    return AuditInput(
        files=[f for f, _ in plan],
        formats=[fmt for _, fmt in plan],
        label=str(path),
        session_id=session_id,
        workspace=workspace,
    )


def _session_meta(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TranscriptError(
            f"{path}: session metadata is not readable JSON ({exc}); fix or remove it"
        ) from exc
    return data if isinstance(data, dict) else {}


def run_audit(
    source: AuditInput,
    settings: Settings,
    workspace_root: Path,
    config: AuditConfig | None = None,
    runs: RunSource | list[LedgerRun] | None = None,
    rejections: RejectionSource | None = None,
) -> AuditReport:
    """Stream every event through the checks and the summary, and build the report.

    ``rejections`` (default: ``runs`` when it can read them, as ``LedgerRuns`` can) is where the
    ``rejected-request`` check reads the session's refused requests, only if that check runs."""
    config = config or config_from_settings(settings)
    ledger_runs: list[LedgerRun] | None
    ledger_error = None
    try:
        ledger_runs = (
            list(runs)
            if isinstance(runs, list)
            else list(runs.runs(source.session_id))
            if runs
            else None
        )
    except Exception as exc:  # a broken or missing ledger must not hide the transcript findings
        ledger_runs, ledger_error = None, f"ledger not readable: {exc}"
    if rejections is None and isinstance(runs, RejectionSource):
        rejections = runs
    ctx = CheckContext(
        config=config,
        workspace=Workspace(root=workspace_root, settings=settings),
        runs=ledger_runs,
        session_id=source.session_id,
        rejections=None if ledger_error else rejections,
        divergences=runs if isinstance(runs, DivergenceSource) else None,
        git_plants=runs if isinstance(runs, GitPlantSource) else None,
    )
    checker = Checker(ctx)
    summary = SummaryBuilder()
    state = ReadState(format="")
    head: list[Event] = []
    tail: deque[Event] = deque(maxlen=TIMELINE_TAIL)
    index = 0
    check, summarize, keep = checker.observe, summary.observe, head.append
    for file, fmt in zip(source.files, source.formats, strict=True):
        lines_before = state.lines
        try:
            for event in read_events(file, fmt, state):
                event.index = index
                index += 1
                check(event)
                summarize(event)
                keep(event)
                if index == TIMELINE_HEAD:
                    keep = tail.append
        except UNREADABLE as exc:
            # what was read stays in the report; the rest of this file is a finding, not a crash
            line = event_line(head, tail, file) if state.lines == lines_before else state.lines
            state.cannot_read(file.name, line, _why(exc))
    state.events = index
    state.format = "+".join(sorted(set(source.formats)))
    stats = state.freeze()
    findings = checker.finish(_unreadable(stats))
    kept = {e.index: EventRecord.of(e) for e in (*head, *tail)}
    for finding in findings:
        if finding.event is not None:
            kept.setdefault(finding.event.index, finding.event)
    timeline = [kept[i] for i in sorted(kept)]
    return AuditReport(
        target=source.label,
        session_id=source.session_id or (stats.session_ids[0] if stats.session_ids else None),
        workspace=str(workspace_root),
        reader=stats,
        summary=summary.build(),
        findings=findings,
        timeline=timeline,
        timeline_omitted=index - len(timeline),
        ledger_runs=ledger_runs,
        ledger_error=ledger_error,
        checks={k: v[1] for k, v in CHECKS.items() if k in checker.enabled},
    )


def event_line(head: list[Event], tail: deque[Event], file: Path) -> int:
    """The line of the last event read from ``file``: where reading it stopped (0: none)."""
    for event in reversed((*head, *tail)):
        if event.source == file.name:
            return event.line
    return 0


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def _unreadable(stats: ReaderStats) -> str | None:
    parts = []
    if stats.unreadable:
        parts.append("could not be read to the end: " + "; ".join(stats.unreadable[:5]))
    if stats.corrupt_lines:
        parts.append(
            f"{stats.corrupt_lines} corrupt line(s) skipped (e.g. {stats.corrupt_examples[0]})"
        )
    if stats.truncated_last_line:
        parts.append(
            f"last line cut off in {', '.join(stats.truncated_last_line)} (session still running or killed?)"
        )
    return "; ".join(parts) or None


__all__ = ["AuditInput", "config_from_settings", "resolve", "run_audit"]
