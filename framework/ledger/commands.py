"""CLI commands of this area (registered by framework.cli). Import only typer at top level."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from framework.ledger.models import RunState
    from framework.ledger.store import Ledger

ledger_app = typer.Typer(
    help="Inspect, export and verify the results ledger.", no_args_is_help=True
)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="research repository (default: the enclosing git repo of the current directory)",
    ),
]
LedgerOpt = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        help="ledger URL (default: ledger.url from the settings, else ledger.sqlite in the state dir)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
ExperimentOpt = Annotated[
    str | None, typer.Option("--experiment", "-e", help="only runs of this experiment")
]
TagOpt = Annotated[str | None, typer.Option("--tag", "-t", help="only runs with this tag")]
StateOpt = Annotated[
    str | None,
    typer.Option("--state", "-s", help="submitted, running, finished, failed or cancelled"),
]
SessionOpt = Annotated[
    str | None, typer.Option("--session", help="only runs asked for by this session")
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="first recorded at or after: ISO time (local if no zone) or an age like 2h, 3d",
    ),
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="first recorded before: same forms as --since")
]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", help="the latest N runs (0: all)", min=0)]

_AGE = re.compile(r"(\d+)\s*([smhdw])")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, option: str) -> datetime:
    """``2026-11-23``, ``2026-11-23T10:00`` (local time unless it has a zone) or an age (``90m``)."""
    from framework.cli import fail

    age = _AGE.fullmatch(text.strip())
    if age:
        return datetime.now(UTC) - timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise fail(
            f"{option} {text!r}: expected an ISO time like 2026-11-23T10:00 or an age like 2h, 3d"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


@contextmanager
def opened(workspace: Path | None, url: str | None) -> Iterator[Ledger]:
    """The configured ledger, with ledger errors turned into a clean exit."""
    from framework.cli import fail, load
    from framework.ledger.models import LedgerError
    from framework.ledger.store import open_ledger
    from framework.workspace import Workspace

    loaded = load(workspace, {"ledger": {"url": url}} if url else None)
    assert loaded.workspace is not None
    try:
        project = Workspace(loaded.workspace, loaded.settings)
        ledger = open_ledger(project.ledger_url, project.state_dir)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    try:
        yield ledger
    except LedgerError as exc:
        raise fail(str(exc)) from None
    finally:
        ledger.close()


def _filtered_runs(
    ledger: Ledger,
    experiment: str | None,
    tag: str | None,
    state: str | None,
    session: str | None,
    since: str | None,
    until: str | None,
    limit: int,
) -> list[RunState]:
    return ledger.runs(
        experiment=experiment,
        tag=tag,
        state=state,
        session_id=session,
        since=parse_time(since, "--since") if since else None,
        until=parse_time(until, "--until") if until else None,
        limit=limit or None,
    )


def _short_time(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else ""


def _duration(run: RunState) -> str:
    if not (run.started_at and run.ended_at):
        return ""
    seconds = (run.ended_at - run.started_at).total_seconds()
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _compact(values: dict[str, Any], limit: int = 3) -> str:
    items = [
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in list(values.items())[:limit]
    ]
    return " ".join(items) + (" …" if len(values) > limit else "")


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def ledger_list(
    experiment: ExperimentOpt = None,
    tag: TagOpt = None,
    state: StateOpt = None,
    session: SessionOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    ledger_url: LedgerOpt = None,
) -> None:
    """List runs (the latest 50 unless --limit says otherwise), oldest first."""
    with opened(workspace, ledger_url) as ledger:
        runs = _filtered_runs(ledger, experiment, tag, state, session, since, until, limit)
    if as_json:
        _echo_json([run.model_dump(mode="json") for run in runs])
        return
    from rich.console import Console
    from rich.table import Table

    from framework.textsafe import cell

    table = Table(title=f"{len(runs)} run(s)", title_justify="left")
    for column in ("run", "experiment", "state", "submitted", "took", "where", "metrics", "tags"):
        table.add_column(column, overflow="fold", no_wrap=column in ("run", "state", "submitted"))
    styles = {"finished": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
    for run in runs:
        where = run.executor or ""
        if run.gpus.count:
            where += f" {run.gpus.count}×{run.gpus.model or 'GPU'}"
        # Names, metrics and tags are what the agent's jobs reported: escaped, never markup.
        table.add_row(
            cell(run.run_id),
            cell(run.experiment or ""),
            cell(run.state.value, style=styles.get(run.state.value, "white")),
            _short_time(run.submitted_at),
            _duration(run),
            cell(where.strip()),
            cell(_compact(run.metrics)),
            cell(",".join(run.tags)),
        )
    Console().print(table)


def ledger_show(
    run_id: Annotated[str, typer.Argument(help="run id")],
    as_json: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    ledger_url: LedgerOpt = None,
) -> None:
    """Show one run: every recorded field and its events."""
    with opened(workspace, ledger_url) as ledger:
        run = ledger.run(run_id)
        events = ledger.events(run_id=run_id)
    if as_json:
        _echo_json(
            {
                "run": run.model_dump(mode="json"),
                "events": [e.model_dump(mode="json") for e in events],
            }
        )
        return
    from rich.console import Console
    from rich.table import Table

    from framework.textsafe import cell

    fields = Table(title=cell(f"run {run.run_id}"), show_header=False, title_justify="left")
    fields.add_column("field", style="cyan")
    fields.add_column("value", overflow="fold")
    for name, value in run.model_dump(mode="json").items():
        if value in (None, [], {}):
            continue
        fields.add_row(name, cell(value if isinstance(value, str) else json.dumps(value)))
    history = Table(title="events", title_justify="left")
    for column in ("seq", "time", "kind", "payload"):
        history.add_column(column, overflow="fold")
    for event in events:
        history.add_row(
            str(event.seq), _short_time(event.ts), event.kind.value, cell(json.dumps(event.payload))
        )
    console = Console()
    console.print(fields)
    console.print(history)


def ledger_diff(
    left: Annotated[str, typer.Argument(help="first run id")],
    right: Annotated[str, typer.Argument(help="second run id")],
    as_json: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    ledger_url: LedgerOpt = None,
) -> None:
    """What differs between two runs: argv, params, code version, outcome and metrics."""
    from framework.ledger.tables import diff_runs

    with opened(workspace, ledger_url) as ledger:
        diffs = diff_runs(ledger.run(left), ledger.run(right))
    if as_json:
        _echo_json([d.model_dump(mode="json") for d in diffs])
        return
    if not diffs:
        typer.echo(
            f"runs {left} and {right} do not differ in argv, params, code, outcome or metrics"
        )
        return
    from rich.console import Console
    from rich.table import Table

    from framework.textsafe import cell

    table = Table(title=cell(f"{left} vs {right}"), title_justify="left")
    table.add_column("field", style="cyan")
    table.add_column(cell(left), overflow="fold")
    table.add_column(cell(right), overflow="fold")
    for d in diffs:
        table.add_row(cell(d.field), cell(json.dumps(d.left)), cell(json.dumps(d.right)))
    Console().print(table)


def ledger_compare(
    run_ids: Annotated[
        list[str] | None, typer.Argument(help="run ids (or use the filters)")
    ] = None,
    experiment: ExperimentOpt = None,
    tag: TagOpt = None,
    state: StateOpt = None,
    session: SessionOpt = None,
    limit: LimitOpt = 0,
    as_json: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    ledger_url: LedgerOpt = None,
) -> None:
    """A metrics table across runs: the given ones, or those matching the filters."""
    from framework.cli import fail
    from framework.ledger.tables import compare_runs

    if not run_ids and not (experiment or tag or state or session):
        raise fail(
            "name runs to compare (ledger compare RUN RUN ...) or select them with --experiment/--tag/--state/--session"
        )
    with opened(workspace, ledger_url) as ledger:
        if run_ids:
            runs = [ledger.run(run_id) for run_id in run_ids]
        else:
            runs = _filtered_runs(ledger, experiment, tag, state, session, None, None, limit)
    table_data = compare_runs(runs)
    if as_json:
        _echo_json(table_data.model_dump(mode="json"))
        return
    from rich.console import Console
    from rich.table import Table

    from framework.textsafe import cell

    table = Table(title=f"metrics of {len(runs)} run(s)", title_justify="left")
    for column in ("run", "experiment", "state", *table_data.metrics):
        table.add_column(cell(column), justify="right" if column in table_data.metrics else "left")
    for row in table_data.rows:
        cells = [row["run_id"], row["experiment"] or "", row["state"]]
        for name in table_data.metrics:
            value = row[name]
            cells.append(
                "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
            )
        table.add_row(*map(cell, cells))
    Console().print(table)


def for_output(data: bytes, terminal: bool) -> bytes:
    """Export bytes as written, for files and pipes; on a terminal, with the control characters
    a job may have put in names and values escaped (they would drive the terminal)."""
    from framework.textsafe import multi_line

    return multi_line(data.decode("utf-8", "replace")).encode() if terminal else data


def ledger_export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, json or parquet")] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="file to write (default: standard output)")
    ] = None,
    events: Annotated[
        bool, typer.Option("--events", help="export the raw events instead of runs")
    ] = False,
    experiment: ExperimentOpt = None,
    tag: TagOpt = None,
    state: StateOpt = None,
    session: SessionOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    workspace: WorkspaceOpt = None,
    ledger_url: LedgerOpt = None,
) -> None:
    """Export runs (one row each, params and metrics as columns) or the raw events."""
    from framework.cli import fail
    from framework.ledger.models import LedgerError
    from framework.ledger.tables import export_rows, flat_event, flat_run

    if fmt not in ("csv", "json", "parquet"):
        raise fail(f"--format {fmt!r}: use csv, json or parquet")
    with opened(workspace, ledger_url) as ledger:
        if events:
            rows = [flat_event(e) for e in ledger.events()]
        else:
            runs = _filtered_runs(ledger, experiment, tag, state, session, since, until, 0)
            rows = [flat_run(run) for run in runs]
    try:
        data = export_rows(rows, fmt, out)  # type: ignore[arg-type]
    except LedgerError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror}") from None
    if data is not None:
        sys.stdout.buffer.write(for_output(data, sys.stdout.isatty()))
        sys.stdout.flush()
    else:
        typer.echo(f"wrote {len(rows)} {'event' if events else 'run'}(s) to {out}", err=True)


def ledger_verify(
    head: Annotated[
        str | None,
        typer.Option(
            "--head",
            help="a head you kept elsewhere (SEQ:HASH, from `ledger head`): the chain must still "
            "have that event with that hash",
        ),
    ] = None,
    as_json: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    ledger_url: LedgerOpt = None,
) -> None:
    """Check the hash chain, the tables derived from it and the heads kept outside it; exit 1 and
    name each problem if anything was edited, removed, inserted, reordered, cut or re-hashed."""
    from framework.cli import fail
    from framework.ledger.anchor import parse_head
    from framework.ledger.models import LedgerError
    from framework.textsafe import one_line

    try:
        kept = parse_head(head) if head is not None else None
    except LedgerError as exc:
        raise fail(str(exc)) from None
    with opened(workspace, ledger_url) as ledger:
        report = ledger.verify(kept)
    if as_json:
        _echo_json(report.model_dump(mode="json"))
    elif report.ok:
        against = (
            f"; matches the kept head(s) at seq {', '.join(map(str, report.anchored))}"
            if report.anchored
            else "; no head kept outside the database to check it against"
        )
        typer.echo(
            f"ledger ok: {report.events} events, {report.runs} runs replayed, head seq "
            f"{report.head_seq} hash {report.head_hash}{against} "
            f"(checked in {report.seconds:.2f} s)"
        )
    else:
        typer.echo(
            f"ledger BROKEN: {len(report.problems)} problem(s) in {report.events} events", err=True
        )
        for problem in report.problems:
            where = (
                f"event seq {problem.seq}"
                if problem.seq is not None
                else f"run {problem.run_id}"
                if problem.run_id is not None
                else "ledger"
            )
            # A problem quotes what the tables hold, which may be anyone's text.
            typer.echo(f"  {one_line(where)}: {one_line(problem.problem)}", err=True)
    if not report.ok:
        raise typer.Exit(1)


def ledger_head(
    as_json: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    ledger_url: LedgerOpt = None,
) -> None:
    """Print the chain head as SEQ:HASH, to keep somewhere the ledger's host cannot write (a
    note, a commit elsewhere, a message); `ledger verify --head SEQ:HASH` checks the ledger
    still has it. Verify first: the head of an edited ledger proves nothing."""
    with opened(workspace, ledger_url) as ledger:
        seq, digest = ledger.head()
    if as_json:
        _echo_json({"seq": seq, "hash": digest})
    else:
        typer.echo(f"{seq}:{digest}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    ledger_app.command("list")(ledger_list)
    ledger_app.command("show")(ledger_show)
    ledger_app.command("diff")(ledger_diff)
    ledger_app.command("compare")(ledger_compare)
    ledger_app.command("export")(ledger_export)
    ledger_app.command("verify")(ledger_verify)
    ledger_app.command("head")(ledger_head)
    app.add_typer(ledger_app, name="ledger")
