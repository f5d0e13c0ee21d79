"""``agentic-researcher replay``: serve a script and, optionally, run one agent CLI against it.

Rehearse a setup (sandbox, methodology files, CLI flags) before spending tokens: the script plays
the model, the real CLI does the work, and the summary says whether every turn fit.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from framework.testing.clients import (
    SCRIPTED_KEY,
    claude_env,
    opencode_env,
    write_codex_home,
)
from framework.testing.script import load_script
from framework.testing.server import RecordedRequest, ScriptedModelServer


@dataclass
class ReplayResult:
    url: str
    turns_total: int
    turns_served: int
    side_requests: int
    failures: list[str] = field(default_factory=list)
    command_exit: int | None = None

    @property
    def ok(self) -> bool:
        clean = not self.failures and self.turns_served == self.turns_total
        return clean and self.command_exit in (None, 0)

    def lines(self) -> list[str]:
        out = [
            f"turns served: {self.turns_served}/{self.turns_total}",
            f"side requests: {self.side_requests}",
        ]
        if self.command_exit is not None:
            out.append(f"command exit status: {self.command_exit}")
        out += [f"problem: {f}" for f in self.failures]
        out.append("replay OK" if self.ok else "replay FAILED")
        return out


def client_environment(url: str, state_dir: Path) -> dict[str, str]:
    """Variables that point each of the four CLIs at the server at ``url``, without touching the
    user's own config: Codex's config goes to ``state_dir/codex`` and OpenCode's travels in a
    variable. Gemini CLI gets its key and base URL; it also needs API-key auth selected in its
    user settings (``security.auth.selectedType = "gemini-api-key"`` in ``~/.gemini/settings.json``),
    which it does not take from a variable or, in 0.61.0, from system settings."""
    return {
        **claude_env(url),
        "OPENAI_BASE_URL": f"{url}/v1",
        **write_codex_home(state_dir / "codex", url),
        "GEMINI_API_KEY": SCRIPTED_KEY,
        "GOOGLE_GEMINI_BASE_URL": url,
        **opencode_env(url),
    }


def replay(
    script_path: Path,
    command: list[str],
    port: int = 0,
    record_path: Path | None = None,
    state_dir: Path | None = None,
    on_request: Callable[[RecordedRequest], None] | None = None,
    on_ready: Callable[[str, dict[str, str]], None] | None = None,
    stop: threading.Event | None = None,
) -> ReplayResult:
    """Serve ``script_path``; run ``command`` with the client variables set, or wait for ``stop``.

    Codex's config goes under ``state_dir`` (default: a temporary directory removed afterwards).
    """
    script = load_script(script_path)
    if record_path is not None:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text("", encoding="utf-8")
    with (
        ScriptedModelServer(
            script, port=port, record_path=record_path, on_request=on_request
        ) as server,
        tempfile.TemporaryDirectory(prefix="scripted-model-") as scratch,
    ):
        env = client_environment(server.url, state_dir or Path(scratch))
        if on_ready is not None:
            on_ready(server.url, env)
        exit_code: int | None = None
        if command:
            exit_code = subprocess.run(command, env={**os.environ, **env}, check=False).returncode
        else:
            # Ctrl-C ends serving; the summary still follows.
            with contextlib.suppress(KeyboardInterrupt):
                (stop or threading.Event()).wait()
        requests = server.requests
        return ReplayResult(
            url=server.url,
            turns_total=len(script.turns),
            turns_served=server.turns_served,
            side_requests=sum(r.kind == "side" for r in requests),
            failures=server.failures,
            command_exit=exit_code,
        )
