"""CLI commands of this area (registered by framework.cli). Import only typer at top level."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
