"""OpenCode (``opencode-ai``): reads AGENTS.md, keeps config in ~/.config/opencode and sessions
and messages as JSON under ~/.local/share/opencode/storage/."""

from __future__ import annotations

import json

from framework.agents.base import AgentInvocation, AgentProfile

ALLOW_ALL = {"permission": {"edit": "allow", "bash": "allow", "webfetch": "allow"}}


class OpenCodeProfile(AgentProfile):
    def argv(self, how: AgentInvocation) -> list[str]:
        args = [self.binary]
        if how.prompt is not None:
            args.append("run")
        if how.model:
            args += ["--model", how.model]
        if how.resume:
            args += ["--session", how.resume]
        elif how.continue_last:
            args.append("--continue")
        if how.prompt is not None:
            args += ["--format", "json", how.prompt]
        return args + list(how.extra_args)

    def environment(self, how: AgentInvocation) -> dict[str, str]:
        env = dict(self.env)
        if how.yolo:
            env["OPENCODE_CONFIG_CONTENT"] = json.dumps(ALLOW_ALL)
        return env


PROFILE = OpenCodeProfile(
    name="opencode",
    binary="opencode",
    package="opencode-ai",
    instruction_files=("AGENTS.md",),
    state_paths=(".config/opencode", ".local/share/opencode"),
    transcript_globs=(
        ".local/share/opencode/storage/session/*/*.json",
        ".local/share/opencode/storage/message/*/*.json",
        ".local/share/opencode/storage/part/*/*/*.json",
    ),
    api_key_env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"),
)
