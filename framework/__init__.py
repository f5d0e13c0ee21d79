"""agentic-researcher: sandboxed CLI agents under a research methodology, with dispatch, ledger and audit."""

__version__ = "0.1.0"
