"""CLI coding agents: one profile per tool (argv, env, state dirs, transcripts)."""

from __future__ import annotations

import importlib

from framework.agents.base import AgentInvocation, AgentProfile

AGENTS = ("claude", "codex", "gemini", "opencode")

__all__ = ["AGENTS", "AgentInvocation", "AgentProfile", "get_agent"]


def get_agent(tool: str) -> AgentProfile:
    if tool not in AGENTS:
        raise ValueError(f"unknown agent tool {tool!r}; choose one of {', '.join(AGENTS)}")
    profile: AgentProfile = importlib.import_module(f"framework.agents.{tool}").PROFILE
    return profile
