"""CLI commands of the dispatch area: ``broker`` and ``jobs ...`` (the remote-run verbs, for humans).

Imports only typer at top level; the broker and the client are imported inside the commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

jobs_app = typer.Typer(
    help="Submit and follow experiments through the session's broker (as remote-run does).",
    no_args_is_help=True,
)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="research repository (default: the enclosing git repo)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _socket(workspace: Path | None) -> str:
    """The broker's socket in the host's own channel directory, checked: never one that a
    sandbox or another user could have put there."""
    from framework.cli import fail, load
    from framework.dispatch.broker import BrokerError, DispatchPaths, trusted_socket
    from framework.dispatch.client import EXIT_UNREACHABLE

    loaded = load(workspace)
    assert loaded.settings.state_dir is not None
    try:
        return str(trusted_socket(DispatchPaths(loaded.settings.state_dir)))
    except BrokerError as exc:
        raise fail(str(exc), EXIT_UNREACHABLE) from None


def _call(workspace: Path | None, payload: dict[str, Any]) -> dict[str, Any]:
    from framework.cli import fail
    from framework.dispatch.client import ClientError, call, checked

    try:
        return checked(call(payload, _socket(workspace)))
    except ClientError as exc:
        raise fail(str(exc), exc.code) from None


def _runs_table(runs: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    from framework.textsafe import cell

    colours = {
        "queued": "yellow",
        "running": "cyan",
        "finished": "green",
        "failed": "red",
        "cancelled": "magenta",
    }
    table = Table(title=cell(title))
    for column in ("run", "name", "state", "nodes", "gpus", "exit", "argv", "reason"):
        # Ids and states stay whole (people copy them); long text folds instead.
        table.add_column(column, overflow="fold", no_wrap=column in ("run", "state"))
    for r in runs:
        # Every field may hold the agent's text: the broker echoes what was submitted, and the
        # answer itself comes from whatever listens on the socket.
        state = str(r["state"])
        table.add_row(
            cell(r["run_id"]),
            cell(r.get("name") or ""),
            cell(state, style=colours.get(state, "white")),
            cell(",".join(r.get("nodes") or [])),
            cell(",".join(r.get("devices") or []) or r["resources"]["gpus"]),
            cell("" if r.get("exit_code") is None else r["exit_code"]),
            cell(" ".join(r["argv"])[:60]),
            cell(r.get("reason") or ""),
        )
    return table


def _print_runs(runs: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(runs, indent=2))
        return
    from rich.console import Console

    Console().print(_runs_table(runs, title))


@jobs_app.command("submit")
def jobs_submit(
    command: Annotated[list[str], typer.Argument(help="program and arguments (put them after --)")],
    gpus: Annotated[int, typer.Option(help="GPUs per node")] = 0,
    cpus: Annotated[int, typer.Option(help="CPUs per task")] = 1,
    nodes: Annotated[int, typer.Option(help="nodes (Slurm)")] = 1,
    tasks_per_node: Annotated[int, typer.Option(help="tasks per node (Slurm)")] = 1,
    array: Annotated[str | None, typer.Option(help="array indices, e.g. 0-19 or 1,3,5")] = None,
    name: Annotated[str | None, typer.Option(help="experiment name")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="tag (repeatable)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="block until every run ends")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job (argv, never shell text)."""
    from framework.cli import fail
    from framework.dispatch.client import ClientError, parse_array
    from framework.textsafe import one_line

    request: dict[str, Any] = {
        "argv": command,
        "cwd": str(Path.cwd()),
        "resources": {"gpus": gpus, "cpus": cpus, "nodes": nodes, "tasks_per_node": tasks_per_node},
        "tags": tag or [],
    }
    if name:
        request["name"] = name
    if array:
        try:
            request["array"] = parse_array(array)
        except ClientError as exc:
            raise fail(str(exc), exc.code) from None
    answer = _call(workspace, {"op": "submit", "request": request})
    if not wait:
        ids = json.dumps(answer["runs"]) if as_json else "\n".join(map(one_line, answer["runs"]))
        typer.echo(ids)
        return
    runs = _call(workspace, {"op": "wait", "run": answer["group"], "timeout_s": 300})["runs"]
    _print_runs(runs, as_json, f"group {answer['group']}")
    if any(r["state"] != "finished" for r in runs):
        raise typer.Exit(1)


@jobs_app.command("list")
def jobs_list(
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    live: Annotated[
        bool, typer.Option("--live", help="refresh the table every second until Ctrl-C")
    ] = False,
    until_done: Annotated[
        bool,
        typer.Option(
            "--until-done", help="with --live: stop once no shown run is queued or running"
        ),
    ] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes (--live)")] = 1.0,
    limit: Annotated[int, typer.Option(help="most recent runs shown")] = 50,
) -> None:
    """Recent runs of this workspace's broker.

    ``--live`` redraws in place on a terminal; when output is not a terminal (a pipe, CI), only the
    final table is printed, so ``--live --until-done`` also works in scripts."""
    if not live:
        _print_runs(_call(workspace, {"op": "list", "limit": limit})["runs"], as_json, "runs")
        return
    from rich.live import Live

    with Live(refresh_per_second=2) as view:
        try:
            while True:
                runs = _call(workspace, {"op": "list", "limit": limit})["runs"]
                view.update(_runs_table(runs, f"runs (live, {time.strftime('%H:%M:%S')})"))
                if until_done and all(r["state"] not in ("queued", "running") for r in runs):
                    return
                time.sleep(max(0.05, interval))
        except KeyboardInterrupt:
            return


@jobs_app.command("status")
def jobs_status(run: str, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """State of a run or of every run of a group."""
    _print_runs(_call(workspace, {"op": "status", "run": run})["runs"], as_json, run)


@jobs_app.command("cancel")
def jobs_cancel(run: str, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a run or a whole group."""
    _print_runs(_call(workspace, {"op": "cancel", "run": run})["runs"], as_json, run)


@jobs_app.command("logs")
def jobs_logs(
    run: str,
    stderr: Annotated[bool, typer.Option("--stderr", help="stderr instead of stdout")] = False,
    rank: Annotated[int, typer.Option(help="rank of a multi-task job")] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing until the run ends")
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print (or follow) a run's output. Control characters other than newline and tab are
    shown escaped (``\\x1b``); the run dir holds the raw bytes."""
    from framework.textsafe import multi_line

    offset = 0
    while True:
        payload = {
            "op": "logs",
            "run": run,
            "stream": "stderr" if stderr else "stdout",
            "rank": rank,
            "offset": offset,
        }
        answer = _call(workspace, payload)
        typer.echo(multi_line(answer["data"]), nl=False)
        offset = answer["offset"]
        if not follow or (answer["done"] and not answer["data"]):
            return
        if not answer["data"]:
            time.sleep(0.2)


@jobs_app.command("tail")
def jobs_tail(
    run: str,
    stderr: Annotated[bool, typer.Option("--stderr")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Follow a run's output until it ends (same as `logs -f`)."""
    jobs_logs(run, stderr=stderr, rank=0, follow=True, workspace=workspace)


@jobs_app.command("nodes")
def jobs_nodes(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Free and busy GPUs per node (from Slurm, or this machine's device list)."""
    nodes = _call(workspace, {"op": "nodes"})["nodes"]
    if as_json:
        typer.echo(json.dumps(nodes, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    from framework.textsafe import cell

    table = Table(title="nodes")
    for column in ("node", "state", "gpus free", "gpus busy", "cpus free"):
        table.add_column(column)
    for n in nodes:
        table.add_row(
            cell(n["name"]),
            cell(n["state"]),
            cell(n["gpus_total"] - n["gpus_busy"]),
            cell(n["gpus_busy"]),
            cell(n["cpus_total"] - n["cpus_busy"]),
        )
    Console().print(table)


def broker(workspace: WorkspaceOpt = None) -> None:
    """Run the job broker in the foreground for this workspace (Ctrl-C stops it)."""
    from framework.cli import fail, load
    from framework.dispatch.broker import BrokerError, serve_forever

    loaded = load(workspace)
    assert loaded.workspace is not None

    def ready(handle: Any) -> None:
        typer.echo(
            f"broker serving {handle.env['REMOTE_RUN_SOCKET']} (executor: {loaded.settings.cluster.executor})"
        )
        typer.echo(f"client: {handle.client_path}")

    try:
        serve_forever(loaded.workspace, loaded.settings, on_ready=ready)
    except BrokerError as exc:
        raise fail(str(exc)) from None


def gc(
    older_than_days: Annotated[
        float, typer.Option("--older-than", help="days since a run ended (or a snapshot changed)")
    ] = 14.0,
    max_size_gb: Annotated[
        float | None,
        typer.Option("--max-size", help="also remove the oldest finished runs until runs/ fits"),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="remove (default: only list)")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Remove run directories and snapshots of finished runs by age and size. A dry run unless
    --yes; the ledger, run records and submission diffs are kept."""
    from framework.cli import fail, load
    from framework.dispatch.gc import GcError, apply_gc, plan_gc

    loaded = load(workspace)
    assert loaded.settings.state_dir is not None
    limit = None if max_size_gb is None else int(max_size_gb * 2**30)
    try:
        plan = plan_gc(loaded.settings.state_dir, older_than_days, limit)
    except GcError as exc:
        raise fail(str(exc)) from None
    for c in plan.candidates:
        typer.echo(f"{c.kind}\t{c.name}\t{c.bytes / 2**20:.1f} MiB\t{c.age_days:.1f} days")
    if not yes:
        typer.echo(
            f"dry run: {len(plan.candidates)} to remove, {plan.total / 2**20:.1f} MiB; "
            "--yes removes them"
        )
        return
    apply_gc(loaded.settings.state_dir, plan)
    typer.echo(f"removed {len(plan.candidates)}, {plan.freed / 2**20:.1f} MiB freed")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("broker")(broker)
    app.command("gc")(gc)
    app.add_typer(jobs_app, name="jobs")
