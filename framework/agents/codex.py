"""Codex CLI (``@openai/codex``): reads AGENTS.md, keeps state in ~/.codex (CODEX_HOME), writes
rollout JSONL transcripts under ~/.codex/sessions/YYYY/MM/DD/."""

from __future__ import annotations

from framework.agents.base import AgentInvocation, AgentProfile


class CodexProfile(AgentProfile):
    def argv(self, how: AgentInvocation) -> list[str]:
        args = [self.binary]
        if how.prompt is not None:
            args.append("exec")
        if how.resume or how.continue_last:
            args.append("resume")
            args += [how.resume] if how.resume else ["--last"]
        if how.model:
            args += ["--model", how.model]
        if how.yolo:
            # The sandbox we start is the isolation; Codex's own nested sandbox cannot work in it.
            args.append("--dangerously-bypass-approvals-and-sandbox")
        if how.prompt is not None:
            args += ["--json", how.prompt]
        return args + list(how.extra_args)


PROFILE = CodexProfile(
    name="codex",
    binary="codex",
    package="@openai/codex",
    instruction_files=("AGENTS.md",),
    state_paths=(".codex",),
    transcript_globs=(".codex/sessions/*/*/*/*.jsonl",),
    api_key_env=("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    env={"CODEX_HOME": "/home/agent/.codex"},
)
