"""Methodology rendering: the files each agent CLI reads, overrides, and strict templates.

Golden files live in tests/golden/<tool>/. After an intended change to a template, regenerate
them with ``UPDATE_GOLDEN=1 pytest tests/unit/test_prompts.py -k golden`` and review the diff.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from framework.cli import app
from framework.config import ClusterSettings, ResearchSettings, SandboxSettings, Settings
from framework.prompts import (
    COMMANDS,
    TOOLS,
    PromptError,
    list_templates,
    packaged_names,
    render_files,
    render_for_tool,
    toml_string,
)

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"

EXPECTED_FILES = {
    "claude": {"CLAUDE.md", *(f".claude/commands/{c.name}.md" for c in COMMANDS)},
    "codex": {
        "AGENTS.md",
        *(f".agents/skills/{c.name}/SKILL.md" for c in COMMANDS),
        *(f".codex/prompts/{c.name}.md" for c in COMMANDS),
    },
    "gemini": {"GEMINI.md", *(f".gemini/commands/{c.name}.toml" for c in COMMANDS)},
    "opencode": {"AGENTS.md", *(f".opencode/commands/{c.name}.md" for c in COMMANDS)},
}


def golden_settings() -> Settings:
    """Every branch of the templates switched on: Slurm, all modules, budgets, GPUs."""
    return Settings(
        sandbox=SandboxSettings(
            gpus="2", network="allowlist", network_allowlist=["api.anthropic.com"]
        ),
        cluster=ClusterSettings(
            executor="slurm",
            partition="gpu",
            account="ml-lab",
            gpus_per_node=4,
            max_nodes=8,
            time_minutes=240,
        ),
        research=ResearchSettings(
            time_budget_hours=12,
            gpu_hours_budget=64,
            modules=["math", "compute", "multinode"],
            protected_paths=["eval/", "data/test/", ".git/hooks/"],
        ),
    )


def front_matter(text: str) -> tuple[dict[str, str], str]:
    assert text.startswith("---\n"), "command file must start with YAML front matter"
    header, _, body = text[4:].partition("\n---\n")
    fields = yaml.safe_load(header)
    assert isinstance(fields, dict)
    return fields, body


@pytest.fixture
def overrides(tmp_path: Path) -> Path:
    directory = tmp_path / ".agentic-researcher" / "prompts"
    directory.mkdir(parents=True)
    return directory


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_rendered_files_match_golden(tool: str) -> None:
    files = render_files(golden_settings(), tool, None)
    golden = GOLDEN_DIR / tool
    if UPDATE_GOLDEN:
        for relative, text in files.items():
            (golden / relative).parent.mkdir(parents=True, exist_ok=True)
            (golden / relative).write_text(text, encoding="utf-8")
    on_disk = {p.relative_to(golden).as_posix() for p in golden.rglob("*") if p.is_file()}
    assert on_disk == set(files), "golden file set differs; regenerate with UPDATE_GOLDEN=1"
    for relative, text in files.items():
        assert text == (golden / relative).read_text(encoding="utf-8"), (
            f"{tool}/{relative} differs from its golden file; if intended, regenerate with UPDATE_GOLDEN=1"
        )


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_each_tool_gets_exactly_the_files_it_reads(tool: str) -> None:
    assert set(render_files(Settings(), tool, None)) == EXPECTED_FILES[tool]


def test_claude_commands_have_front_matter_with_description_and_argument_hint() -> None:
    files = render_files(Settings(), "claude", None)
    for cmd in COMMANDS:
        fields, body = front_matter(files[f".claude/commands/{cmd.name}.md"])
        assert fields == {"description": cmd.description, "argument-hint": cmd.argument_hint}
        assert "$ARGUMENTS" in body


def test_gemini_commands_parse_as_toml_with_description_and_prompt() -> None:
    files = render_files(Settings(), "gemini", None)
    for cmd in COMMANDS:
        data = tomllib.loads(files[f".gemini/commands/{cmd.name}.toml"])
        assert set(data) == {"description", "prompt"}
        assert data["description"] == cmd.description
        assert "{{args}}" in data["prompt"]
        assert data["prompt"].strip(), "the prompt must not be empty"


def test_codex_gets_skills_with_name_and_description_and_custom_prompts() -> None:
    files = render_files(Settings(), "codex", None)
    for cmd in COMMANDS:
        skill, skill_body = front_matter(files[f".agents/skills/{cmd.name}/SKILL.md"])
        assert skill == {"name": cmd.name, "description": cmd.description}
        assert "$ARGUMENTS" not in skill_body, "skills take no argument placeholder"
        prompt, prompt_body = front_matter(files[f".codex/prompts/{cmd.name}.md"])
        assert prompt["description"] == cmd.description
        assert "$ARGUMENTS" in prompt_body


def test_opencode_commands_have_front_matter_with_description() -> None:
    files = render_files(Settings(), "opencode", None)
    for cmd in COMMANDS:
        fields, body = front_matter(files[f".opencode/commands/{cmd.name}.md"])
        assert fields == {"description": cmd.description}
        assert "$ARGUMENTS" in body


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_instructions_state_the_ten_rules_and_git_discipline(tool: str) -> None:
    files = render_files(Settings(), tool, None)
    text = files[TOOLS[tool].instruction_file]
    for number in range(1, 11):
        assert f"\n{number}. **" in text, f"rule {number} missing"
    assert "Never `git add -A`" in text
    assert "exp(E012):" in text
    assert "--no-verify" in text
    for cmd in COMMANDS:
        assert TOOLS[tool].invocation(cmd.name) in text


def test_settings_values_reach_the_instructions() -> None:
    text = render_files(golden_settings(), "claude", None)["CLAUDE.md"]
    assert "12 hours" in text
    assert "64 GPU-hours" in text
    assert "`data/test/`" in text
    assert "api.anthropic.com" in text
    assert "partition `gpu`" in text and "account `ml-lab`" in text
    assert "2 GPUs" in text


def test_network_none_tells_the_agent_there_is_no_network() -> None:
    settings = Settings(sandbox=SandboxSettings(network="none"))
    text = render_files(settings, "claude", None)["CLAUDE.md"]
    assert "Network: none" in text
    assert "egress proxy" not in text


@pytest.mark.parametrize(
    ("modules", "present", "absent"),
    [
        ([], [], ["Module: mathematical", "Module: compute", "Module: multi-node", "remote-run ["]),
        (
            ["math"],
            ["Module: mathematical"],
            ["Module: compute", "Module: multi-node", "remote-run ["],
        ),
        (
            ["compute"],
            ["Module: compute", "remote-run ["],
            ["Module: mathematical", "Module: multi-node"],
        ),
        (
            ["multinode"],
            ["Module: multi-node", "remote-run ["],
            ["Module: compute", "Module: mathematical"],
        ),
    ],
)
def test_modules_are_rendered_only_when_enabled(
    modules: list, present: list[str], absent: list[str]
) -> None:
    settings = Settings(research=ResearchSettings(modules=modules))
    text = render_files(settings, "claude", None)["CLAUDE.md"]
    for marker in present:
        assert marker in text
    for marker in absent:
        assert marker not in text


def test_workspace_override_takes_precedence_even_inside_an_include(
    tmp_path: Path, overrides: Path
) -> None:
    (overrides / "rules.md.j2").write_text(
        "## Our lab's rules\n\nOnly {{ time_budget }} to spend.\n"
    )
    text = render_files(Settings(), "claude", tmp_path)["CLAUDE.md"]
    assert "## Our lab's rules" in text
    assert "Only 24 hours to spend." in text
    assert "The ten rules" not in text


def test_list_templates_shows_which_file_wins(tmp_path: Path, overrides: Path) -> None:
    (overrides / "git.md.j2").write_text("custom\n")
    origins = dict(list_templates(tmp_path))
    assert origins["git.md.j2"] == str(overrides / "git.md.j2")
    assert origins["rules.md.j2"] == "package"
    assert set(origins) == set(packaged_names())


def test_missing_variable_is_an_error_naming_template_line_and_variable(
    tmp_path: Path, overrides: Path
) -> None:
    (overrides / "workflow.md.j2").write_text("line one\nBudget: {{ no_such_budget }}\n")
    with pytest.raises(PromptError) as info:
        render_files(Settings(), "claude", tmp_path)
    message = str(info.value)
    assert "no_such_budget" in message
    assert f"{overrides / 'workflow.md.j2'}:2" in message


def test_missing_attribute_is_an_error_not_an_empty_string(tmp_path: Path, overrides: Path) -> None:
    (overrides / "workflow.md.j2").write_text("{{ cluster.no_such_field }}\n")
    with pytest.raises(PromptError, match="no_such_field"):
        render_files(Settings(), "claude", tmp_path)


def test_template_syntax_error_names_file_and_line(tmp_path: Path, overrides: Path) -> None:
    (overrides / "git.md.j2").write_text("fine\nfine\n{% if %}\n")
    with pytest.raises(PromptError) as info:
        render_files(Settings(), "codex", tmp_path)
    assert f"{overrides / 'git.md.j2'}:3" in str(info.value)
    assert "syntax error" in str(info.value)


def test_override_with_unknown_name_is_reported_not_silently_ignored(
    tmp_path: Path, overrides: Path
) -> None:
    (overrides / "rules.md").write_text("forgot the .j2 suffix\n")
    with pytest.raises(PromptError, match=r"rules\.md match no packaged template"):
        render_files(Settings(), "claude", tmp_path)


def test_unknown_tool_is_an_error_listing_the_choices() -> None:
    with pytest.raises(
        PromptError, match="unknown tool 'cursor'; choose one of: claude, codex, gemini, opencode"
    ):
        render_files(Settings(), "cursor", None)


def test_render_for_tool_writes_the_files_and_returns_their_paths(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = render_for_tool(Settings(), "gemini", out, None)
    assert {p.relative_to(out).as_posix() for p in written} == EXPECTED_FILES["gemini"]
    assert all(p.is_file() for p in written)


def test_render_refuses_to_follow_a_planted_directory_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "ws"
    out.mkdir()
    (out / ".claude").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PromptError, match="outside"):
        render_for_tool(Settings(), "claude", out, None)
    assert list(outside.iterdir()) == []


def test_render_into_a_file_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(PromptError, match="not a directory"):
        render_for_tool(Settings(), "claude", target, None)


@given(st.text())
def test_toml_string_round_trips_any_text(text: str) -> None:
    assert tomllib.loads(f"v = {toml_string(text)}")["v"] == text


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "home" / ".state"))
    for name in list(os.environ):
        if name.startswith("AR_"):
            monkeypatch.delenv(name)
    workspace = tmp_path / "ws"
    (workspace / ".git").mkdir(parents=True)
    return workspace


def test_cli_prompts_list_prints_every_template_with_its_origin(isolated_env: Path) -> None:
    result = CliRunner().invoke(app, ["prompts", "list", "--workspace", str(isolated_env)])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.strip().splitlines()]
    assert {name for name, _ in rows} == set(packaged_names())
    assert {origin for _, origin in rows} == {"package"}


def test_cli_prompts_render_writes_the_tool_files(isolated_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    args = [
        "prompts",
        "render",
        "--tool",
        "opencode",
        "--out",
        str(out),
        "--workspace",
        str(isolated_env),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == EXPECTED_FILES[
        "opencode"
    ]


def test_cli_prompts_render_reports_a_broken_override_cleanly(isolated_env: Path) -> None:
    broken = isolated_env / ".agentic-researcher" / "prompts"
    broken.mkdir(parents=True)
    (broken / "rules.md.j2").write_text("{{ typo_variable }}\n")
    args = ["prompts", "render", "--tool", "claude", "--workspace", str(isolated_env)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "typo_variable" in result.output
    assert not (isolated_env / "CLAUDE.md").exists(), "nothing is written when rendering fails"
