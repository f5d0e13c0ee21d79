"""``agentic-researcher gc``: remove the run directories and workspace snapshots of finished runs.

What it may remove, and only that:

- the run directory ``<state>/runs/<run>/`` of a run whose record is final (finished, failed,
  cancelled) and that ended more than ``older_than_days`` ago; with ``max_total_bytes``, further
  finished runs, oldest first, until the run directories fit;
- a snapshot ``<state>/dispatch/snapshots/<tree>/`` that no queued or running run uses, last
  changed more than ``older_than_days`` ago.

Never the ledger, the run records, the submissions' diffs (what reproduces a run) or anything of a
run still queued or running. It refuses while a broker serves the state dir (a new submission
could reuse a snapshot being removed). Run directories are the jobs' to write, so every size and
removal goes through :mod:`framework.safefs`: by descriptor, links unlinked and never followed,
nothing outside the directory touched. A dry run unless ``apply``.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from framework import safefs
from framework.dispatch.broker import DispatchPaths, _records_of
from framework.dispatch.models import RunRecord

_TREE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class GcError(RuntimeError):
    pass


@dataclass
class Candidate:
    kind: str  # "run" or "snapshot"
    name: str
    bytes: int
    age_days: float


@dataclass
class GcPlan:
    candidates: list[Candidate] = field(default_factory=list)
    kept_active: int = 0
    applied: bool = False
    freed: int = 0

    @property
    def total(self) -> int:
        return sum(c.bytes for c in self.candidates)


def load_records(paths: DispatchPaths) -> dict[str, RunRecord]:
    """Every run the broker knows of: the submissions as submitted, overridden by the per-run
    records written at each state change (as the broker reloads them)."""
    records: dict[str, RunRecord] = {}
    for path in (
        sorted(paths.groups.glob("*.json")) if paths.groups.is_dir() else []
    ):  # host-path: the broker's groups/
        try:
            for record in _records_of(
                json.loads(path.read_text())
            ):  # host-path: the broker's own submission
                records[record.run_id] = record
        except (OSError, ValueError, TypeError, KeyError):
            continue
    for path in (
        sorted(paths.records.glob("*.json")) if paths.records.is_dir() else []
    ):  # host-path: the broker's records/
        try:
            record = RunRecord.model_validate_json(
                path.read_text()
            )  # host-path: the broker's own record
        except (OSError, ValidationError):
            continue
        records[record.run_id] = record
    return records


def broker_running(paths: DispatchPaths) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(paths.socket))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def plan_gc(
    state_dir: Path,
    older_than_days: float,
    max_total_bytes: int | None = None,
    now: datetime | None = None,
) -> GcPlan:
    paths = DispatchPaths(state_dir)
    if broker_running(paths):
        raise GcError(
            f"a broker is serving {paths.socket}: end the session (or stop `agentic-researcher "
            "broker`) first, so that no submission reuses what gc removes"
        )
    now = now or datetime.now(UTC)
    records = load_records(paths)
    plan = GcPlan()
    runs_root = paths.runs
    present = (
        set(safefs.listdir(runs_root)) if runs_root.is_dir() else set()
    )  # host-path: the host's runs/ (entries via safefs)
    finished: list[tuple[float, Candidate]] = []
    kept_bytes = 0
    for run_id in sorted(present):
        record = records.get(run_id)
        size = _size(runs_root, run_id)
        if size is None:
            continue  # not a directory of ours (a link, a file): left alone
        if record is None or not record.state.terminal or record.ended_at is None:
            plan.kept_active += record is not None and not record.state.terminal
            kept_bytes += size
            continue
        age = (now - record.ended_at).total_seconds() / 86400
        finished.append((age, Candidate("run", run_id, size, age)))
    finished.sort(key=lambda item: -item[0])  # oldest first
    total = kept_bytes + sum(c.bytes for _, c in finished)
    for age, candidate in finished:
        over = max_total_bytes is not None and total > max_total_bytes
        if age >= older_than_days or over:
            plan.candidates.append(candidate)
            total -= candidate.bytes
        else:
            break  # the rest are younger still
    in_use = {r.snapshot_tree for r in records.values() if not r.state.terminal}
    snapshots = paths.snapshots
    for name in (
        sorted(safefs.listdir(snapshots)) if snapshots.is_dir() else []
    ):  # host-path: the host's snapshot store
        if not _TREE.fullmatch(name) or name in in_use:
            continue
        info = safefs.stat_beneath(snapshots, name)
        size = _size(snapshots, name)
        if info is None or size is None:
            continue
        age = (time.time() - info.st_mtime) / 86400
        if age >= older_than_days:
            plan.candidates.append(Candidate("snapshot", name, size, age))
    return plan


def _size(root: Path, name: str) -> int | None:
    try:
        return safefs.tree_size(root, name)
    except OSError:  # not a directory, reached through a link, or too deep
        return None


def apply_gc(state_dir: Path, plan: GcPlan) -> GcPlan:
    paths = DispatchPaths(state_dir)
    for candidate in plan.candidates:
        root = paths.runs if candidate.kind == "run" else paths.snapshots
        plan.freed += safefs.remove_tree(root, candidate.name)
    plan.applied = True
    return plan
