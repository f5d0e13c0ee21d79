"""The ``agentic-researcher`` command. Thin: each command parses, calls one library function, renders.

Heavy modules (docker, torch, transformers, submitit) are imported inside the commands that use
them, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from framework import __version__

if TYPE_CHECKING:
    from framework.config import LoadedSettings

app = typer.Typer(
    name="agentic-researcher",
    help="Run CLI coding agents on research questions: sandboxed, under a written methodology, "
    "with experiments dispatched, recorded in a ledger and audited afterwards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show or create configuration files.", no_args_is_help=True)
prompts_app = typer.Typer(help="List and render the methodology templates.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(prompts_app, name="prompts")

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="research repository (default: the enclosing git repo of the current directory)",
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an actionable error on stderr and return the Exit to raise."""
    from rich.console import Console
    from rich.text import Text

    from framework.textsafe import multi_line

    # Messages often quote what the agent or a job wrote (a run name, the broker's answer).
    error = Text("error: ", style="bold red") + Text(multi_line(message))
    Console(stderr=True).print(error, highlight=False)
    return typer.Exit(code)


def load(workspace: Path | None, flags: dict[str, Any] | None = None) -> LoadedSettings:
    """Settings for the workspace, turning configuration errors into a clean exit."""
    from framework.config import ConfigError, load_settings
    from framework.workspace import WorkspaceError, find_root

    try:
        root = find_root(workspace)
        return load_settings(workspace=root, flags=flags)
    except (ConfigError, WorkspaceError) as exc:
        raise fail(str(exc)) from None


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="print the version and exit")] = False,
) -> None:
    if version:
        typer.echo(f"agentic-researcher {__version__}")
        raise typer.Exit()


@config_app.command("show")
def config_show(
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Print the merged settings and where each value came from."""
    from framework.config import describe

    loaded = load(workspace)
    rows = describe(loaded)
    if as_json:
        typer.echo(json.dumps([{"key": k, "value": v, "source": s} for k, v, s in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"settings for {loaded.workspace}")
    table.add_column("key", style="cyan")
    table.add_column("value")
    table.add_column("source", style="dim")
    for key, value, source in rows:
        table.add_row(key, json.dumps(value), source)
    Console().print(table)


@config_app.command("init")
def config_init(
    workspace: WorkspaceOpt = None,
    user: Annotated[
        bool, typer.Option("--user", help="write the user file instead of the workspace file")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented config file with every setting at its default."""
    from framework.config import commented_template, user_config_path, workspace_config_path
    from framework.workspace import find_root

    path = user_config_path() if user else workspace_config_path(find_root(workspace))
    if path.exists() and not force:
        raise fail(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(commented_template())
    typer.echo(f"wrote {path}")


@prompts_app.command("list")
def prompts_list(workspace: WorkspaceOpt = None) -> None:
    """List the methodology templates and which file (packaged or workspace override) each comes from."""
    from framework.prompts import list_templates

    loaded = load(workspace)
    for name, origin in list_templates(loaded.workspace):
        typer.echo(f"{name}\t{origin}")


@prompts_app.command("render")
def prompts_render(
    tool: Annotated[
        str, typer.Option("--tool", "-t", help="claude, codex, gemini or opencode")
    ] = "",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="directory to write into (default: the workspace)"),
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Render the methodology into the files the chosen agent reads."""
    from framework.prompts import PromptError, render_for_tool

    loaded = load(workspace, {"agent": {"tool": tool}} if tool else None)
    target = out or loaded.workspace
    assert target is not None
    try:
        written = render_for_tool(
            loaded.settings, loaded.settings.agent.tool, target, loaded.workspace
        )
    except PromptError as exc:
        raise fail(str(exc)) from None
    for path in written:
        typer.echo(str(path))


@app.command("init")
def init(
    path: Annotated[
        Path, typer.Argument(help="research repository to set up (created if missing)")
    ] = Path("."),
    tool: Annotated[str, typer.Option("--tool", "-t", help="agent whose files to render")] = "",
    force: Annotated[bool, typer.Option("--force", help="overwrite files you have edited")] = False,
) -> None:
    """Set up a research repo: config, rendered methodology, report.tex and TODO.md, .gitignore, git."""
    from framework.config import ConfigError
    from framework.init import InitError, init_workspace

    try:
        report = init_workspace(path.resolve(), tool=tool or None, force=force)
    except (InitError, ConfigError) as exc:
        raise fail(str(exc)) from None
    for line in report.lines():
        typer.echo(line)


def _register_areas() -> None:
    """Each area adds its commands; their modules import only typer at top level."""
    from framework.audit import commands as audit_commands
    from framework.dispatch import commands as dispatch_commands
    from framework.ledger import commands as ledger_commands
    from framework.sandbox import commands as sandbox_commands
    from framework.testing import commands as testing_commands

    for area in (
        sandbox_commands,
        dispatch_commands,
        ledger_commands,
        audit_commands,
        testing_commands,
    ):
        area.register(app)


_register_areas()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
