"""The root command: fast to start, clean errors, every area registered."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from framework.cli import app

HEAVY_MODULES = ("torch", "transformers", "docker", "submitit", "numpy", "git", "jinja2")


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys, json\n"
        "sys.argv = ['agentic-researcher', '--help']\n"
        "from framework import cli\n"
        "try:\n    cli.app()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`--help` imported heavy modules: {loaded}"


def test_version_flag_prints_the_version() -> None:
    from framework import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_unknown_command_exits_non_zero() -> None:
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code != 0
