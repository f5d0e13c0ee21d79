"""Tabular views of runs for humans and other tools: diff two runs, compare metrics, export.

Pure functions of :class:`RunState` lists; the CLI only renders what they return.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from framework.ledger.models import LedgerError, LedgerEvent, RunState

ExportFormat = Literal["csv", "json", "parquet"]

_SCALAR_COLUMNS = (
    "run_id",
    "experiment",
    "state",
    "session_id",
    "executor",
    "slurm_job_id",
    "array_index",
    "git_commit",
    "diff_hash",
    "submitted_at",
    "started_at",
    "ended_at",
    "exit_code",
    "reason",
    "run_dir",
    "first_seq",
    "last_seq",
)
_LIST_COLUMNS = ("argv", "nodes", "tags", "artifacts")


class FieldDiff(BaseModel):
    field: str
    left: Any
    right: Any


def diff_runs(left: RunState, right: RunState) -> list[FieldDiff]:
    """What differs between two runs in what was run (argv, params, code) and what came out.
    Dict fields are compared key by key (``params.lr``, ``metrics.loss``)."""
    a = left.model_dump(mode="json")
    b = right.model_dump(mode="json")
    diffs: list[FieldDiff] = []
    for name in (
        "experiment",
        "argv",
        "git_commit",
        "diff_hash",
        "executor",
        "state",
        "exit_code",
        "reason",
        "nodes",
        "gpus",
        "tags",
    ):
        if a[name] != b[name]:
            diffs.append(FieldDiff(field=name, left=a[name], right=b[name]))
    for name in ("params", "metrics", "resources"):
        for key in sorted(set(a[name]) | set(b[name])):
            if a[name].get(key) != b[name].get(key):
                diffs.append(
                    FieldDiff(field=f"{name}.{key}", left=a[name].get(key), right=b[name].get(key))
                )
    return diffs


class MetricsTable(BaseModel):
    metrics: list[str]
    rows: list[dict[str, Any]]


def compare_runs(runs: list[RunState]) -> MetricsTable:
    """One row per run, one column per metric name seen in any of them (missing: None)."""
    names = sorted({name for run in runs for name in run.metrics})
    rows = [
        {"run_id": run.run_id, "experiment": run.experiment, "state": run.state.value}
        | {name: run.metrics.get(name) for name in names}
        for run in runs
    ]
    return MetricsTable(metrics=names, rows=rows)


def flat_run(run: RunState) -> dict[str, Any]:
    """A run as one flat row: scalars as they are, lists and nested values as JSON text,
    params and metrics spread into ``param.NAME`` / ``metric.NAME`` columns."""
    data = run.model_dump(mode="json")
    row: dict[str, Any] = {name: data[name] for name in _SCALAR_COLUMNS}
    row["gpu_model"] = data["gpus"]["model"]
    row["gpu_count"] = data["gpus"]["count"]
    for name in _LIST_COLUMNS:
        row[name] = json.dumps(data[name])
    for prefix, values in (("param", data["params"]), ("metric", data["metrics"])):
        for key, value in values.items():
            row[f"{prefix}.{key}"] = (
                value
                if isinstance(value, str | int | float | bool) or value is None
                else json.dumps(value)
            )
    return row


def flat_event(event: LedgerEvent) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    data["payload"] = json.dumps(data["payload"], sort_keys=True)
    return data


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string a job wrote that starts like a formula
    (``=HYPERLINK(...)``, ``+``, ``-``, ``@``) gets a leading apostrophe; numbers, and strings
    that are numbers (``-0.5``), are left alone."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def export_rows(rows: list[dict[str, Any]], fmt: ExportFormat, out: Path | None) -> bytes | None:
    """Write rows as CSV, JSON or Parquet to ``out``; with no ``out``, return the bytes (CSV/JSON only)."""
    if fmt == "json":
        data = (json.dumps(rows, indent=2) + "\n").encode()
    elif fmt == "csv":
        buffer = io.StringIO()
        # Column names come from metric and parameter names a job chose: guarded like the cells.
        columns = _columns(rows)
        writer = csv.writer(buffer)
        writer.writerow([spreadsheet_safe(name) for name in columns])
        for row in rows:
            writer.writerow([spreadsheet_safe(row.get(name, "")) for name in columns])
        data = buffer.getvalue().encode()
    elif fmt == "parquet":
        if out is None:
            raise LedgerError("parquet is a binary format: give a file with --out FILE.parquet")
        _write_parquet(rows, out)
        return None
    else:
        raise LedgerError(f"unknown export format {fmt!r}; use csv, json or parquet")
    if out is None:
        return data
    out.write_bytes(data)
    return None


def _write_parquet(rows: list[dict[str, Any]], out: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LedgerError(
            "parquet export needs pyarrow, which is not installed: pip install pyarrow "
            "(csv and json need nothing extra)"
        ) from None
    columns = _columns(rows)
    table = pa.table({name: _arrow_column(pa, [row.get(name) for row in rows]) for name in columns})
    pq.write_table(table, out)


def _arrow_column(pa: Any, values: list[Any]) -> Any:
    """Columns whose values mix types (a metric that is a number in one run and text in another)
    become text, since Parquet columns have one type."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) > 1 and not kinds <= {int, float}:
        values = [None if v is None else str(v) for v in values]
    return pa.array(values)
