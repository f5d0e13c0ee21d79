"""The terminal summary (rich): findings by severity, tools, files, commands, tokens, cost, duration."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from framework.audit.report import AuditReport
from framework.textsafe import cell, one_line

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m {rest % 60:02d}s"


def render_text(report: AuditReport, console: Console) -> None:
    """Everything taken from the transcript or the workspace (paths, tool and model names,
    finding messages that quote commands) is escaped and never read as markup."""
    s = report.summary
    r = report.reader
    counts = report.counts()
    console.print(
        Text.assemble(
            ("audit of", "bold"),
            f" {one_line(report.target)}  ",
            (f"({r.format}, {r.bytes_read / 1e6:.1f} MB, {r.events} events)", "dim"),
        )
    )
    if report.session_id:
        console.print(cell(f"session {report.session_id}"))
    console.print(
        f"duration {duration_text(s.duration_s)} · {s.commands_total} commands ({s.commands_failed} failed) · "
        f"{len(s.files_changed)} files changed · {s.subagents} subagents · {s.compactions} compactions"
    )
    line = " · ".join(f"[{STYLE[k]}]{v} {k}[/]" for k, v in counts.items())
    console.print(f"findings: {line}")
    if report.findings:
        table = Table(show_header=True, header_style="bold")
        table.add_column("severity")
        table.add_column("check")
        table.add_column("event", justify="right")
        table.add_column("finding")
        for f in report.findings:
            where = f"{f.event.index}" if f.event else ""
            table.add_row(
                Text(f.severity.value, style=STYLE[f.severity.value]),
                cell(f.check),
                where,
                cell(f.message),
            )
        console.print(table)
    if s.tools:
        console.print(
            cell("tools: " + ", ".join(f"{name} ×{n}" for name, n in list(s.tools.items())[:15]))
        )
    if s.files_changed:
        shown = ", ".join(f.path for f in s.files_changed[:10])
        more = f" (+{len(s.files_changed) - 10} more)" if len(s.files_changed) > 10 else ""
        console.print(cell(f"files changed: {shown}{more}"))
    if s.models:
        usage = Table(title="tokens per model", show_header=True, header_style="bold")
        for column in ("model", "input", "output", "cache read", "cache write", "cost (USD, est.)"):
            usage.add_column(column, justify="left" if column == "model" else "right")
        for m in s.models:
            cost = f"{m.cost_usd:.4f}" if m.cost_usd is not None else "not in price table"
            usage.add_row(
                cell(m.model),
                f"{m.input_tokens:,}",
                f"{m.output_tokens:,}",
                f"{m.cache_read_tokens:,}",
                f"{m.cache_write_tokens:,}",
                cost,
            )
        console.print(usage)
        if s.cost_usd is not None:
            console.print(
                f"estimated cost: ${s.cost_usd:.4f} (list prices as of {s.prices_as_of}; an estimate)"
            )
    if r.unknown_record_types or r.corrupt_lines or r.truncated_last_line:
        console.print(
            cell(
                f"reader: {r.corrupt_lines} corrupt lines, truncated last line in "
                f"{r.truncated_last_line or 'none'}, "
                f"unknown record types {dict(r.unknown_record_types) or 'none'}",
                style="dim",
            )
        )
    if report.ledger_error:
        console.print(cell(report.ledger_error, style="yellow"))
