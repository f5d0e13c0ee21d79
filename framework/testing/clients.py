"""How to point each real agent CLI at a scripted model server (environment and config files)."""

from __future__ import annotations

from pathlib import Path

SCRIPTED_KEY = "scripted-model-not-a-real-key"
CODEX_PROVIDER = "scripted"
CODEX_KEY_ENV = "SCRIPTED_MODEL_API_KEY"


def claude_env(url: str) -> dict[str, str]:
    """Variables that make Claude Code talk only to ``url`` (no telemetry, no update checks)."""
    return {
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": SCRIPTED_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def codex_config(url: str, model: str = "scripted-model") -> str:
    """A Codex ``config.toml`` using ``url`` as a Responses API provider, headless and unsandboxed.

    Codex's own sandbox is off because ours (bubblewrap or a container) is the boundary, and
    approvals are off because nobody is there to answer them.
    """
    return (
        f'model = "{model}"\n'
        f'model_provider = "{CODEX_PROVIDER}"\n'
        'approval_policy = "never"\n'
        'sandbox_mode = "danger-full-access"\n'
        "\n"
        f"[model_providers.{CODEX_PROVIDER}]\n"
        'name = "Scripted model"\n'
        f'base_url = "{url}/v1"\n'
        f'env_key = "{CODEX_KEY_ENV}"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )


def write_codex_home(codex_home: Path, url: str, model: str = "scripted-model") -> dict[str, str]:
    """Write ``config.toml`` into ``codex_home`` and return the variables Codex then needs."""
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(url, model), encoding="utf-8")
    return {"CODEX_HOME": str(codex_home), CODEX_KEY_ENV: SCRIPTED_KEY}


def run_as(user: str | None, argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` with exactly ``env`` as its environment, as ``user`` when given (we are root then).

    Claude Code refuses ``--dangerously-skip-permissions`` as root, so tests and the demo run the
    CLIs as an ordinary user.
    """
    assignments = [f"{name}={value}" for name, value in env.items()]
    prefix = ["runuser", "-u", user, "--"] if user else []
    return [*prefix, "env", "-i", *assignments, *argv]
