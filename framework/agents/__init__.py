"""CLI coding agents: one profile per tool (argv, env, state dirs, transcripts)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from framework.agents.base import AgentInvocation, AgentProfile

AGENTS = ("claude", "codex", "gemini", "opencode")

__all__ = ["AGENTS", "AgentInvocation", "AgentProfile", "credential_names", "get_agent"]


def get_agent(tool: str) -> AgentProfile:
    if tool not in AGENTS:
        raise ValueError(f"unknown agent tool {tool!r}; choose one of {', '.join(AGENTS)}")
    profile: AgentProfile = importlib.import_module(f"framework.agents.{tool}").PROFILE
    return profile


def credential_names(tool: str, allowed: Sequence[str]) -> list[str]:
    """The names from ``allowed`` (``agent.api_key_env``) whose host values reach ``tool``'s
    sandbox: those its profile reads, and any name no profile claims (one the user added for a
    provider we do not know). A Claude Code session thus gets no OpenAI or Gemini key."""
    own = set(get_agent(tool).api_key_env)
    claimed = {name for agent in AGENTS for name in get_agent(agent).api_key_env}
    return [name for name in allowed if name in own or name not in claimed]
