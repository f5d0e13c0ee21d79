"""CLI commands of this area (registered by framework.cli). Import only typer at top level."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

INTERNAL_ERROR = 3
"""Exit codes: 0 a report, 1 ``--fail-on`` reached, 2 bad input, 3 an internal error."""


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    html = "html"


class FailOn(StrEnum):
    info = "info"
    warning = "warning"
    error = "error"
    never = "never"


def audit(
    target: Annotated[
        str,
        typer.Argument(
            help="transcript file, directory of transcripts, or session id from the session store"
        ),
    ],
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="text (terminal), json or html")
    ] = OutputFormat.text,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="write the report to this file instead of stdout"),
    ] = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="exit 1 when a finding has at least this severity")
    ] = FailOn.never,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="research repository the session worked in (default: from session.json, else the current repo)",
        ),
    ] = None,
    ledger: Annotated[
        str | None,
        typer.Option("--ledger", help="ledger URL (default: the project's ledger, when it exists)"),
    ] = None,
    disable: Annotated[
        list[str] | None, typer.Option("--disable", help="check id to skip (repeatable)")
    ] = None,
    idle_gap_minutes: Annotated[
        float | None, typer.Option("--idle-gap-minutes", help="report gaps longer than this")
    ] = None,
) -> None:
    """Audit an agent session: what it did, and whether it broke the methodology."""
    from rich.console import Console

    from framework.audit.audit import config_from_settings, resolve, run_audit
    from framework.audit.checks.base import Severity
    from framework.audit.ledger import LedgerRuns
    from framework.audit.readers import TranscriptError
    from framework.cli import fail, load

    loaded = load(workspace)
    try:
        source = resolve(
            target,
            sessions_dir=(loaded.settings.state_dir / "sessions")
            if loaded.settings.state_dir
            else None,
        )
    except TranscriptError as exc:
        raise fail(str(exc)) from None
    if workspace is None and source.workspace is not None and source.workspace.is_dir():
        loaded = load(source.workspace)
    root = loaded.workspace or Path.cwd()
    settings = loaded.settings
    try:
        config = config_from_settings(
            settings, disabled=disable or None, idle_gap_minutes=idle_gap_minutes
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    url = ledger
    if (
        url is None
        and settings.state_dir is not None
        and (settings.state_dir / "ledger.sqlite").is_file()
    ):
        url = settings.ledger.url or f"sqlite:///{settings.state_dir / 'ledger.sqlite'}"
    elif url is None and settings.ledger.url:
        url = settings.ledger.url
    try:
        report = run_audit(
            source, settings, root, config=config, runs=LedgerRuns(url) if url else None
        )
    except (TranscriptError, ValueError) as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # a bug of the audit, never of the input: exit 3, not 1 (--fail-on)
        raise fail(
            f"internal error of the audit ({type(exc).__name__}: {exc}); please report it as a "
            "bug with the command line and, if you can share it, the transcript",
            code=INTERNAL_ERROR,
        ) from None

    if output_format is OutputFormat.text:
        from framework.audit.render.text import render_text

        if out is None:
            render_text(report, Console())
        else:
            with out.open("w") as fh:
                render_text(report, Console(file=fh, width=120, color_system=None))
    else:
        if output_format is OutputFormat.json:
            body = report.model_dump_json(indent=2)
        else:
            from framework.audit.render.html import render_html

            body = render_html(report)
        if out is None:
            typer.echo(body)
        else:
            out.write_text(body)
    if out is not None:
        Console(stderr=True).print(f"wrote {out}", highlight=False)
    worst = report.worst()
    if (
        fail_on is not FailOn.never
        and worst is not None
        and worst.rank >= Severity(fail_on.value).rank
    ):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("audit")(audit)
