"""Claude Code (``@anthropic-ai/claude-code``): reads CLAUDE.md, keeps state in ~/.claude and
~/.claude.json, writes one JSONL transcript per session under ~/.claude/projects/<cwd slug>/."""

from __future__ import annotations

from framework.agents.base import AgentInvocation, AgentProfile


class ClaudeProfile(AgentProfile):
    def argv(self, how: AgentInvocation) -> list[str]:
        args = [self.binary]
        if how.model:
            args += ["--model", how.model]
        if how.yolo:
            args.append("--dangerously-skip-permissions")
        if how.resume:
            args += ["--resume", how.resume]
        elif how.continue_last:
            args.append("--continue")
        if how.prompt is not None:
            args += ["-p", how.prompt, "--output-format", "stream-json", "--verbose"]
        return args + list(how.extra_args)


PROFILE = ClaudeProfile(
    name="claude",
    binary="claude",
    package="@anthropic-ai/claude-code",
    instruction_files=("CLAUDE.md",),
    state_paths=(".claude", ".claude.json"),
    transcript_globs=(".claude/projects/*/*.jsonl",),
    api_key_env=("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"),
    env={"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
)
