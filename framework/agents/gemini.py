"""Gemini CLI (``@google/gemini-cli``): reads GEMINI.md, keeps state in ~/.gemini, writes one JSONL
chat per session under ~/.gemini/tmp/<project>/chats/ (older versions: one JSON file)."""

from __future__ import annotations

from framework.agents.base import AgentInvocation, AgentProfile


class GeminiProfile(AgentProfile):
    def argv(self, how: AgentInvocation) -> list[str]:
        args = [self.binary]
        if how.model:
            args += ["--model", how.model]
        if how.yolo:
            # Gemini CLI ignores --yolo in a folder nobody marked trusted, and the trust list would
            # live in the agent home; the sandbox, not that list, is the boundary here.
            args += ["--yolo", "--skip-trust"]
        if how.resume:
            args += ["--resume", how.resume]
        elif how.continue_last:
            args += ["--resume", "latest"]
        if how.prompt is not None:
            args += ["--prompt", how.prompt, "--output-format", "stream-json"]
        return args + list(how.extra_args)


PROFILE = GeminiProfile(
    name="gemini",
    binary="gemini",
    package="@google/gemini-cli",
    instruction_files=("GEMINI.md",),
    state_paths=(".gemini",),
    transcript_globs=(
        ".gemini/tmp/*/chats/session-*.jsonl",
        ".gemini/tmp/*/chats/session-*.json",
    ),
    api_key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"),
)
