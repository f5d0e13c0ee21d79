"""CLI commands of this area (registered by framework.cli). Import only typer at top level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from framework.config import Mount
    from framework.sandbox.store import SessionStore

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="research repository (default: the enclosing git repo of the current directory)",
    ),
]

sessions_app = typer.Typer(help="List and show recorded agent sessions.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    from framework.cli import fail

    return fail(message, code)


def launch_command(
    ctx: typer.Context,
    tool: Annotated[
        str | None, typer.Option("--tool", "-t", help="claude, codex, gemini or opencode")
    ] = None,
    runtime: Annotated[
        str | None, typer.Option("--runtime", "-r", help="bwrap, docker, podman or apptainer")
    ] = None,
    yolo: Annotated[
        bool,
        typer.Option(
            "--yolo", help="skip the agent's permission prompts (the sandbox is the guard)"
        ),
    ] = False,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="run headless with this prompt")
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="resume this agent session id")
    ] = None,
    continue_last: Annotated[
        bool, typer.Option("--continue", help="continue the agent's most recent session")
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="model name for the agent")
    ] = None,
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="'none', 'all', a count, or ids like 0,1")
    ] = None,
    network: Annotated[
        str | None, typer.Option("--network", help="none, allowlist (default) or open")
    ] = None,
    mount: Annotated[
        list[str] | None, typer.Option("--mount", help="SRC[:DST][:ro|rw], repeatable (default ro)")
    ] = None,
    model_endpoint: Annotated[
        str | None,
        typer.Option(
            "--model-endpoint", help="http://127.0.0.1:PORT of a model server on the host"
        ),
    ] = None,
    no_broker: Annotated[
        bool, typer.Option("--no-broker", help="do not start the experiment broker")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="leave the session running (container runtimes)")
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Start an agent in the sandbox with the workspace mounted at its host path.

    Arguments after `--` go to the agent CLI unchanged.
    """
    from pydantic import ValidationError

    from framework.config import ConfigError, Mount, load_settings
    from framework.sandbox.launch import LaunchRequest, launch
    from framework.sandbox.runtime import SandboxError
    from framework.workspace import WorkspaceError, find_root

    flags: dict[str, dict[str, object]] = {}
    if tool:
        flags.setdefault("agent", {})["tool"] = tool
    if runtime:
        flags.setdefault("sandbox", {})["runtime"] = runtime
    if network:
        flags.setdefault("sandbox", {})["network"] = network
    try:
        root = find_root(workspace)
        settings = load_settings(workspace=root, flags=flags).settings
        request = LaunchRequest(
            workspace=root,
            prompt=prompt,
            yolo=yolo,
            resume=resume,
            continue_last=continue_last,
            model=model,
            gpus=gpus,
            mounts=[_parse_mount(Mount, m) for m in mount or []],
            extra_args=list(ctx.args),
            model_endpoint=model_endpoint,
            broker=not no_broker,
            detach=detach,
            settings=settings,
        )
        record = launch(request)
    except (ConfigError, WorkspaceError, SandboxError, ValueError) as exc:
        message = str(exc)
        if isinstance(exc, ValidationError):
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise _fail(message) from None
    typer.echo(
        f"session {record.id} ended with exit code {record.exit_code}; "
        f"{len(record.transcripts)} transcript file(s) saved",
        err=True,
    )
    if record.exit_code:
        raise typer.Exit(record.exit_code)


def _parse_mount(mount_type: type[Mount], text: str) -> Mount:
    from pydantic import ValidationError

    try:
        return mount_type.parse(text)
    except ValidationError as exc:
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ValueError(f"--mount {text!r}: {reasons}") from None


def build_command(
    tag: Annotated[
        str | None, typer.Option("--tag", help="image tag (default: sandbox.image)")
    ] = None,
    base_image: Annotated[
        str | None, typer.Option("--base-image", help="base image (Dockerfile ARG BASE_IMAGE)")
    ] = None,
    no_agents: Annotated[
        bool, typer.Option("--no-agents", help="skip Node.js, the agent CLIs and uv")
    ] = False,
    no_latex: Annotated[bool, typer.Option("--no-latex", help="skip the LaTeX engine")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Build the sandbox image from container/ (Docker), showing progress."""
    from rich.console import Console

    from framework.config import ConfigError, load_settings
    from framework.sandbox.build import build_image
    from framework.sandbox.runtime import SandboxError
    from framework.workspace import find_root

    console = Console(stderr=True)
    try:
        image = tag or load_settings(workspace=find_root(workspace)).settings.sandbox.image
        args = {
            "INSTALL_AGENTS": "0" if no_agents else "1",
            "INSTALL_LATEX": "0" if no_latex else "1",
        }
        with console.status(f"building {image}") as status:

            def show(line: str) -> None:
                if line.startswith("Step "):
                    status.update(f"building {image}: {line[:100]}")
                console.print(line, markup=False, highlight=False, style="dim")

            image_id = build_image(image, base_image, args, on_line=show)
    except (ConfigError, SandboxError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"built {image} ({image_id[:19]})")


def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Report which sandbox runtimes work on this host and why the others do not."""
    from framework.sandbox.doctor import diagnose

    checks = diagnose()
    if as_json:
        typer.echo(json.dumps([c.__dict__ for c in checks], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sandbox runtimes on this host")
    table.add_column("check", style="cyan")
    table.add_column("ok")
    table.add_column("detail")
    for check in checks:
        table.add_row(check.name, "[green]yes[/]" if check.ok else "[red]no[/]", check.detail)
    Console().print(table)


@sessions_app.command("list")
def sessions_list(
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the sessions recorded for this workspace, oldest first."""
    store = _store(workspace)
    records = store.records()
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    if not records:
        typer.echo(f"no sessions yet in {store.root}", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    from framework.textsafe import cell

    table = Table(title=cell(f"sessions in {store.root}"))
    for column in ("id", "tool", "runtime", "started", "duration", "exit", "transcripts"):
        table.add_column(column)
    for r in records:
        duration = f"{(r.ended_at - r.started_at).total_seconds():.0f}s" if r.ended_at else "-"
        # A record is read back from the state dir: its text fields are printed escaped.
        table.add_row(
            cell(r.id),
            cell(r.tool),
            cell(r.runtime),
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            duration,
            "-" if r.exit_code is None else str(r.exit_code),
            str(len(r.transcripts)),
        )
    Console().print(table)


@sessions_app.command("show")
def sessions_show(
    session_id: Annotated[str, typer.Argument(help="session id from `sessions list`")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Print one session's metadata (JSON) and where its transcripts are."""
    from framework.sandbox.store import SessionError

    store = _store(workspace)
    try:
        record = store.load(session_id)
    except SessionError as exc:
        raise _fail(str(exc)) from None
    typer.echo(record.model_dump_json(indent=2))
    typer.echo(f"session dir: {store.path(record.id)}", err=True)


def _store(workspace: Path | None) -> SessionStore:
    from framework.cli import load
    from framework.sandbox.store import SessionStore
    from framework.workspace import Workspace

    loaded = load(workspace)
    assert loaded.workspace is not None
    return SessionStore(Workspace(loaded.workspace, loaded.settings).sessions_dir)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command(
        "launch",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(launch_command)
    app.command("build")(build_command)
    app.command("doctor")(doctor_command)
    app.add_typer(sessions_app, name="sessions")
