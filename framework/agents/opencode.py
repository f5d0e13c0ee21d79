"""OpenCode (``opencode-ai``): reads AGENTS.md, keeps config in ~/.config/opencode and every
session, message and part in the SQLite database ~/.local/share/opencode/opencode.db (before 1.x:
JSON files under ~/.local/share/opencode/storage/)."""

from __future__ import annotations

from framework.agents.base import AgentInvocation, AgentProfile


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
        if how.yolo:
            args.append("--auto")
        if how.prompt is not None:
            args += ["--format", "json", how.prompt]
        return args + list(how.extra_args)


PROFILE = OpenCodeProfile(
    name="opencode",
    binary="opencode",
    package="opencode-ai",
    instruction_files=("AGENTS.md",),
    state_paths=(".config/opencode", ".local/share/opencode"),
    transcript_globs=(
        ".local/share/opencode/opencode.db",
        ".local/share/opencode/opencode.db-wal",
        ".local/share/opencode/storage/session/*/*.json",
        ".local/share/opencode/storage/message/*/*.json",
        ".local/share/opencode/storage/part/*/*/*.json",
    ),
    api_key_env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"),
    # In the sandbox OpenCode reaches no package registry, no GitHub and no models.opencode.ai,
    # and its binary sits read-only on /usr or in the image: it must not try to update, download
    # language servers, install its default plugins from npm or refresh its model catalogue (the
    # one built into the binary serves). Left on, 1.18.33 asks models.opencode.ai and github.com.
    env={
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_SHARE": "1",
    },
)
