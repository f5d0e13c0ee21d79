"""agentic-researcher: sandboxed CLI agents under a research methodology, with dispatch, ledger and audit."""

__version__ = "0.1.0"


def checkout_env() -> dict[str, str]:
    """This process's environment with this checkout first on ``PYTHONPATH``: for a child
    started as ``python -m framework....``, so that it imports the same code as its parent."""
    import os
    from pathlib import Path

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
