"""CLI commands of this area (registered by framework.cli). Import only typer at top level."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def replay(
    script: Annotated[Path, typer.Argument(help="script file (.yaml, .yml or .json)")],
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="agent command to run against the script (after --); omit to serve until Ctrl-C"
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", "-p", help="port to listen on (0: any free port)")
    ] = 0,
    record: Annotated[
        Path | None,
        typer.Option("--record", help="write every request received to this JSONL file"),
    ] = None,
) -> None:
    """Play a scripted model to a real agent CLI: rehearse a setup before spending tokens.

    Example: agentic-researcher replay plan.yaml -- claude -p "go" --dangerously-skip-permissions
    """
    from rich.console import Console

    from framework.testing.replay import replay as run_replay
    from framework.testing.script import ScriptError
    from framework.testing.server import RecordedRequest

    console = Console(stderr=True, highlight=False)

    def show_ready(url: str, env: dict[str, str]) -> None:
        console.print(f"scripted model listening on {url}")
        if not command:
            console.print("set these variables for the agent CLI, then run it (Ctrl-C stops):")
            for name, value in env.items():
                typer.echo(f"export {name}={value}")

    def show_request(entry: RecordedRequest) -> None:
        if entry.error:
            console.print(f"[red]request {entry.index}: {entry.error}[/]")
        elif entry.kind == "main" and entry.turn is not None:
            tools = ", ".join(entry.tools_called) or "text only"
            console.print(f"turn {entry.turn + 1}: {tools}")

    try:
        result = run_replay(
            script,
            command or [],
            port=port,
            record_path=record,
            on_request=show_request,
            on_ready=show_ready,
        )
    except ScriptError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except FileNotFoundError as exc:
        console.print(
            f"[bold red]error:[/] cannot run {command[0] if command else ''!r}: {exc.strerror}"
        )
        raise typer.Exit(2) from None
    for line in result.lines():
        console.print(line)
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("replay")(replay)
