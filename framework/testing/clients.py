"""How to point each real agent CLI at a scripted model server (environment and config files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCRIPTED_KEY = "scripted-model-not-a-real-key"
CODEX_PROVIDER = "scripted"
CODEX_KEY_ENV = "SCRIPTED_MODEL_API_KEY"
OPENCODE_PROVIDER = "scripted"


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


def gemini_settings(model: str = "scripted-model") -> dict[str, Any]:
    """Gemini CLI ``settings.json``: API-key auth, a fixed model, no telemetry or update checks.

    The auth type is pinned because Gemini CLI picks "gateway" auth whenever
    ``GOOGLE_GEMINI_BASE_URL`` is set, and its headless mode rejects that type. A fixed model
    turns off the model router, whose classifier requests would otherwise reach the server too.
    """
    return {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "model": {"name": model},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }


def write_gemini_home(home: Path, url: str, model: str = "scripted-model") -> dict[str, str]:
    """Write ``home/.gemini/settings.json`` and return the variables Gemini CLI then needs.

    ``--yolo`` still needs ``--skip-trust`` (or ``GEMINI_CLI_TRUST_WORKSPACE=true``) in a folder
    nobody marked trusted; the launcher's Gemini profile passes the flag.
    """
    settings_dir = home / ".gemini"
    settings_dir.mkdir(parents=True, exist_ok=True)
    (settings_dir / "settings.json").write_text(
        json.dumps(gemini_settings(model), indent=2) + "\n", encoding="utf-8"
    )
    return {"GEMINI_API_KEY": SCRIPTED_KEY, "GOOGLE_GEMINI_BASE_URL": url}


def opencode_config(url: str, model: str = "scripted-model") -> dict[str, Any]:
    """An OpenCode config whose only model is ``url``, reached as an Anthropic Messages provider.

    OpenCode ships ``@ai-sdk/anthropic`` inside its binary, so the provider needs no install; the
    scripted server tells OpenCode from Claude Code by the tools it offers. Every permission an
    unattended run needs is granted, as ``--yolo`` does for the other CLIs.
    """
    return {
        "model": f"{OPENCODE_PROVIDER}/{model}",
        "small_model": f"{OPENCODE_PROVIDER}/{model}",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            OPENCODE_PROVIDER: {
                "npm": "@ai-sdk/anthropic",
                "name": "Scripted model",
                "options": {"baseURL": f"{url}/v1", "apiKey": SCRIPTED_KEY},
                "models": {model: {"name": "Scripted model", "tool_call": True}},
            }
        },
        "permission": {"edit": "allow", "bash": "allow", "webfetch": "deny"},
    }


def opencode_env(url: str, model: str = "scripted-model") -> dict[str, str]:
    """Variables that give OpenCode :func:`opencode_config` and keep it off the network otherwise."""
    from framework.agents.opencode import PROFILE  # the switches the launcher also sets

    return {"OPENCODE_CONFIG_CONTENT": json.dumps(opencode_config(url, model)), **PROFILE.env}


def write_opencode_home(home: Path, url: str, model: str = "scripted-model") -> dict[str, str]:
    """Write :func:`opencode_config` as ``home/.config/opencode/opencode.json``; no variables needed
    beyond the launcher's OpenCode profile, which keeps OpenCode off the network otherwise."""
    config_dir = home / ".config" / "opencode"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "opencode.json").write_text(
        json.dumps(opencode_config(url, model), indent=2) + "\n", encoding="utf-8"
    )
    return {}


def sandboxed_agent_env(tool: str, home: Path, url: str) -> dict[str, str]:
    """Point ``tool`` at the scripted server ``url`` for a launch whose agent home is ``home``.

    Config files go into ``home`` (HOME inside the sandbox); the returned variables are for
    ``LaunchRequest.extra_env``. Paths in them must be the sandbox's, so Codex gets no CODEX_HOME
    here: its profile sets it.
    """
    if tool == "claude":
        return claude_env(url)
    if tool == "codex":
        codex_home = home / ".codex"
        codex_home.mkdir(parents=True, exist_ok=True)
        (codex_home / "config.toml").write_text(codex_config(url), encoding="utf-8")
        return {CODEX_KEY_ENV: SCRIPTED_KEY}
    if tool == "gemini":
        return write_gemini_home(home, url)
    if tool == "opencode":
        return write_opencode_home(home, url)
    raise ValueError(f"no scripted-model setup for agent tool {tool!r}")


def run_as(user: str | None, argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` with exactly ``env`` as its environment, as ``user`` when given (we are root then).

    Claude Code refuses ``--dangerously-skip-permissions`` as root, so tests and the demo run the
    CLIs as an ordinary user.
    """
    assignments = [f"{name}={value}" for name, value in env.items()]
    prefix = ["runuser", "-u", user, "--"] if user else []
    return [*prefix, "env", "-i", *assignments, *argv]
