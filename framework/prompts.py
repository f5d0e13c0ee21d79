"""Methodology templates -> the instruction and command files each agent CLI reads.

Templates are jinja2 files (``*.j2``) in the packaged ``prompts/`` directory. A workspace overrides
any of them by placing a file of the same name in ``<workspace>/.agentic-researcher/prompts/``;
the override wins everywhere, including where another template includes it. Rendering uses
``StrictUndefined``: a variable that does not exist is an error naming the template and line,
never an empty string.

What each tool gets (see docs/methodology.md for why):

- claude: ``CLAUDE.md`` and ``.claude/commands/<name>.md`` (YAML front matter).
- codex: ``AGENTS.md``, skills in ``.agents/skills/<name>/SKILL.md`` (read from the repository)
  and custom prompts in ``.codex/prompts/<name>.md`` (Codex reads these only from
  ``$CODEX_HOME/prompts``; the launcher copies them there).
- gemini: ``GEMINI.md`` and ``.gemini/commands/<name>.toml`` (keys ``description``, ``prompt``).
- opencode: ``AGENTS.md`` and ``.opencode/commands/<name>.md`` (YAML front matter).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from pydantic import BaseModel, ConfigDict

from framework import safefs
from framework.config import WORKSPACE_DIR_NAME, Settings

TEMPLATE_SUFFIX = ".j2"
OVERRIDE_DIR = Path(WORKSPACE_DIR_NAME) / "prompts"
INSTRUCTIONS_TEMPLATE = "instructions.md.j2"
SKELETON_TEMPLATES = {"report.tex": "report.tex.j2", "TODO.md": "TODO.md.j2"}
MODULE_ORDER = ("math", "compute", "multinode")


class PromptError(ValueError):
    """A template cannot be found, parsed or rendered; the message says which and what to do."""


@dataclass(frozen=True)
class SlashCommand:
    name: str
    template: str
    description: str
    argument_hint: str


COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand(
        name="research-plan",
        template="command-research-plan.md.j2",
        description="Write the research plan: question, baseline, hypotheses, experiment tiers, budget",
        argument_hint="[research question or focus]",
    ),
    SlashCommand(
        name="retrospective",
        template="command-retrospective.md.j2",
        description="Review the experiments so far against the plan and decide what to do next",
        argument_hint="[optional focus]",
    ),
    SlashCommand(
        name="update-baseline",
        template="command-update-baseline.md.j2",
        description="Promote a verified experiment result to be the new baseline",
        argument_hint="<experiment id, e.g. E012>",
    ),
)


class ClusterContext(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: str
    partition: str | None
    account: str | None
    qos: str | None
    time_minutes: int
    gpus_per_node: int
    cpus_per_task: int
    max_nodes: int
    max_array: int
    job_sandbox: str
    job_runtime: str


class CommandContext(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    invocation: str


class PromptContext(BaseModel):
    """Every variable a template may use (besides ``arguments`` in command templates).

    Built from Settings once; templates never see Settings itself, so this model is the stable,
    documented surface for people who write overrides.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str
    agent_name: str
    instruction_file: str
    gpus: str
    gpus_text: str
    network: str
    network_allowlist: list[str]
    protected_paths: list[str]
    time_budget_hours: float
    time_budget: str
    gpu_hours_budget: str | None
    modules: list[str]
    package_manager: str
    cluster: ClusterContext
    commands: list[CommandContext]


@dataclass(frozen=True)
class ToolLayout:
    """Where one agent CLI reads its instructions and slash commands, and how it spells them."""

    name: str
    agent_name: str
    instruction_file: str
    invocation: Callable[[str], str]
    command_files: Callable[[SlashCommand, Callable[[str], str]], dict[str, str]]


def _front_matter(fields: Mapping[str, str], body: str) -> str:
    header = yaml.safe_dump(dict(fields), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n{body}"


def toml_string(text: str) -> str:
    """``text`` as a TOML multi-line basic string (escapes backslashes, quotes and controls).

    A JSON string would also be valid TOML, but the prompt should stay readable in the file.
    """
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char in "\n\t":
            out.append(char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"""\n' + "".join(out) + '"""'


def _claude_commands(cmd: SlashCommand, render: Callable[[str], str]) -> dict[str, str]:
    fields = {"description": cmd.description, "argument-hint": cmd.argument_hint}
    return {f".claude/commands/{cmd.name}.md": _front_matter(fields, render("$ARGUMENTS"))}


def _codex_commands(cmd: SlashCommand, render: Callable[[str], str]) -> dict[str, str]:
    prompt = {"description": cmd.description, "argument-hint": cmd.argument_hint}
    skill = {"name": cmd.name, "description": cmd.description}
    skill_arguments = "(the text the user wrote when invoking this skill, if any)"
    return {
        f".agents/skills/{cmd.name}/SKILL.md": _front_matter(skill, render(skill_arguments)),
        f".codex/prompts/{cmd.name}.md": _front_matter(prompt, render("$ARGUMENTS")),
    }


def _gemini_commands(cmd: SlashCommand, render: Callable[[str], str]) -> dict[str, str]:
    text = (
        f"# Generated by agentic-researcher from {cmd.template}.\n"
        f"description = {json.dumps(cmd.description, ensure_ascii=False)}\n"
        f"prompt = {toml_string(render('{{args}}'))}\n"
    )
    return {f".gemini/commands/{cmd.name}.toml": text}


def _opencode_commands(cmd: SlashCommand, render: Callable[[str], str]) -> dict[str, str]:
    fields = {"description": cmd.description}
    return {f".opencode/commands/{cmd.name}.md": _front_matter(fields, render("$ARGUMENTS"))}


TOOLS: dict[str, ToolLayout] = {
    "claude": ToolLayout("claude", "Claude Code", "CLAUDE.md", lambda n: f"/{n}", _claude_commands),
    "codex": ToolLayout("codex", "Codex", "AGENTS.md", lambda n: f"${n}", _codex_commands),
    "gemini": ToolLayout("gemini", "Gemini CLI", "GEMINI.md", lambda n: f"/{n}", _gemini_commands),
    "opencode": ToolLayout(
        "opencode", "OpenCode", "AGENTS.md", lambda n: f"/{n}", _opencode_commands
    ),
}


def package_dir() -> Path:
    """The installed ``prompts/`` directory (a real directory in a checkout and in a wheel install).

    Found through the import system first; the sibling of ``framework/`` is the fallback for an
    editable install made before ``prompts/`` became a regular package.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec("prompts")
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) for p in spec.submodule_search_locations)
    candidates.append(Path(__file__).resolve().parent.parent / "prompts")
    for candidate in candidates:
        if (candidate / INSTRUCTIONS_TEMPLATE).is_file():  # host-path: the installed package
            return candidate
    raise PromptError(
        f"the packaged methodology templates are missing (no {INSTRUCTIONS_TEMPLATE} in "
        f"{', '.join(map(str, candidates))}); reinstall agentic-researcher"
    )


def packaged_names() -> list[str]:
    directory = package_dir()
    return sorted(
        p.name
        for p in directory.iterdir()  # host-path: the installed package's templates
        if p.name.endswith(TEMPLATE_SUFFIX)
        and not p.name.startswith((".", "_"))
        and p.is_file()  # host-path: the installed package's templates
    )


MAX_OVERRIDE_BYTES = 1 << 20
"""The largest template override read from the workspace."""


def override_names(workspace: Path | None) -> list[str]:
    """The template overrides in the workspace, which holds what the agent wrote: listed and
    checked through :mod:`framework.safefs`. A link (or anything but a regular file) there, or a
    link on the way to the directory, is an error: following it would render a host file into the
    agent's instructions."""
    if workspace is None:
        return []
    shown_dir = workspace / OVERRIDE_DIR
    try:
        names = [n for n in safefs.listdir(workspace, OVERRIDE_DIR) if not n.startswith((".", "_"))]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PromptError(
            f"{shown_dir} cannot be read safely ({exc.strerror}); a session may have planted a "
            "link there: inspect it, remove the link, and render again"
        ) from None
    unsafe = [n for n in names if not safefs.is_regular_file(workspace, OVERRIDE_DIR / n)]
    if unsafe:
        raise PromptError(
            f"{shown_dir}: {', '.join(map(repr, unsafe))} are not regular files (links are never "
            "followed; a session may have planted them); replace each with the template itself, "
            "or remove it"
        )
    return names


class _OverrideLoader(jinja2.BaseLoader):
    """Template overrides read beneath the workspace through no link, bounded in size."""

    def __init__(self, workspace: Path, names: list[str]) -> None:
        self.workspace = workspace
        self.names = set(names)

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        if template not in self.names:
            raise jinja2.TemplateNotFound(template)
        relative = OVERRIDE_DIR / template
        try:
            data = safefs.read_bytes(self.workspace, relative, limit=MAX_OVERRIDE_BYTES)
        except OSError as exc:
            raise PromptError(
                f"{self.workspace / relative} cannot be read safely ({exc.strerror}); replace "
                "it with the template itself, or remove it"
            ) from None
        return data.decode("utf-8", errors="replace"), str(self.workspace / relative), lambda: False


def list_templates(workspace: Path | None) -> list[tuple[str, str]]:
    """(template name, origin) for every packaged template; origin is 'package' or the override file."""
    overrides = set(override_names(workspace))
    rows = []
    for name in packaged_names():
        origin = str(workspace / OVERRIDE_DIR / name) if workspace and name in overrides else None
        rows.append((name, origin or "package"))
    return rows


def _environment(workspace: Path | None) -> jinja2.Environment:
    """The templates' environment, sandboxed: an override is the workspace's (the agent can have
    written it), and a template must not reach Python beyond the plain data it is given."""
    known = set(packaged_names())
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(package_dir()))]
    overrides = override_names(workspace)
    if workspace is not None and overrides:
        stray = [n for n in overrides if n not in known]
        if stray:
            raise PromptError(
                f"{workspace / OVERRIDE_DIR}: {', '.join(stray)} match no packaged template, so they would be ignored; "
                "rename each to one of the names `agentic-researcher prompts list` prints, or remove it"
            )
        loaders.insert(0, _OverrideLoader(workspace, overrides))
    return SandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _template_location(exc: BaseException) -> str | None:
    """file:line of the innermost template frame in the traceback jinja2 rewrites for us."""
    location = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(TEMPLATE_SUFFIX):
            location = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return location


def _render(env: jinja2.Environment, name: str, variables: Mapping[str, Any]) -> str:
    try:
        return env.get_template(name).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        where = f"{exc.filename or exc.name}:{exc.lineno}"
        raise PromptError(
            f"{where}: template syntax error: {exc.message}; fix the template (or delete the "
            "override to fall back to the packaged one)"
        ) from None
    except jinja2.UndefinedError as exc:
        where = _template_location(exc) or name
        raise PromptError(
            f"{where}: {exc.message} (while rendering {name}); use only the variables listed in "
            "docs/methodology.md, or define it with {% set %}"
        ) from None
    except SecurityError as exc:
        where = _template_location(exc) or name
        raise PromptError(
            f"{where}: {exc} (while rendering {name}); templates are sandboxed and see only the "
            "variables listed in docs/methodology.md, never Python internals"
        ) from None
    except jinja2.TemplateNotFound as exc:
        raise PromptError(
            f"template {exc.name!r} not found (needed while rendering {name}); "
            "`agentic-researcher prompts list` shows the available names"
        ) from None


def _hours(value: float) -> str:
    text = f"{value:g}"
    return f"{text} hour" if value == 1 else f"{text} hours"


def _gpus_text(gpus: str) -> str:
    if gpus == "none":
        return "none (this sandbox is CPU-only; GPU work goes through `remote-run`)"
    if gpus == "all":
        return "all GPUs of the host"
    if "," in gpus:
        return f"devices {gpus}"
    return f"{gpus} GPU" + ("" if gpus == "1" else "s")


def build_context(settings: Settings, tool: str) -> PromptContext:
    layout = _layout(tool)
    research = settings.research
    enabled = set(research.modules)
    return PromptContext(
        tool=layout.name,
        agent_name=layout.agent_name,
        instruction_file=layout.instruction_file,
        gpus=settings.sandbox.gpus,
        gpus_text=_gpus_text(settings.sandbox.gpus),
        network=settings.sandbox.network,
        network_allowlist=list(settings.sandbox.network_allowlist),
        protected_paths=list(research.protected_paths),
        time_budget_hours=research.time_budget_hours,
        time_budget=_hours(research.time_budget_hours),
        gpu_hours_budget=None
        if research.gpu_hours_budget is None
        else f"{research.gpu_hours_budget:g}",
        modules=[m for m in MODULE_ORDER if m in enabled],
        package_manager=research.package_manager,
        cluster=ClusterContext(
            **settings.cluster.model_dump(
                exclude={
                    "local_devices",
                    "local_workers",
                    "job_pids",
                    "job_memory_gb",
                    "max_in_flight",
                }
            )
        ),
        commands=[
            CommandContext(
                name=c.name, description=c.description, invocation=layout.invocation(c.name)
            )
            for c in COMMANDS
        ],
    )


def _layout(tool: str) -> ToolLayout:
    try:
        return TOOLS[tool]
    except KeyError:
        raise PromptError(f"unknown tool {tool!r}; choose one of: {', '.join(TOOLS)}") from None


def render_files(settings: Settings, tool: str, workspace: Path | None) -> dict[str, str]:
    """Rendered instruction and command files for ``tool``: {path relative to the output: text}."""
    layout = _layout(tool)
    env = _environment(workspace)
    context = build_context(settings, tool).model_dump()
    files = {layout.instruction_file: _render(env, INSTRUCTIONS_TEMPLATE, context)}
    for cmd in COMMANDS:

        def render(arguments: str, cmd: SlashCommand = cmd) -> str:
            return _render(env, cmd.template, {**context, "arguments": arguments})

        files.update(layout.command_files(cmd, render))
    return files


def render_skeletons(settings: Settings, tool: str, workspace: Path | None) -> dict[str, str]:
    """``report.tex`` and ``TODO.md`` starting points for a new research repository."""
    env = _environment(workspace)
    context = build_context(settings, tool).model_dump()
    return {path: _render(env, name, context) for path, name in SKELETON_TEMPLATES.items()}


def write_text_atomic(root: Path, relative: str, text: str) -> None:
    """Write ``root/relative`` via a temporary file and rename, so a crash never leaves half a
    file. The tree is the agent's (a workspace, an agent home): the walk follows no link, the
    temporary name is unpredictable and created ``O_EXCL`` (a link planted at a guessed name
    cannot redirect the write), and a link at the file itself is replaced, not followed."""
    safefs.replace(root, relative, text.encode("utf-8"), create_dirs=True)


def contained_target(root: Path, relative: str) -> Path:
    """``root / relative``, refusing a path whose directory leads outside ``root`` via symlinks.

    Workspaces hold files the agent wrote; a planted ``.claude -> ~/.config`` link must not turn
    a render on the host into a write elsewhere. A symlink at the file itself is harmless: the
    atomic rename replaces the link, not its target.
    """
    target = root / relative
    base = root.resolve()
    parent = target.parent.resolve()
    if parent != base and base not in parent.parents:
        raise PromptError(
            f"refusing to write {target}: its directory resolves to {parent}, outside {base} "
            "(a symlink?); remove the link and render again"
        )
    return target


def render_for_tool(
    settings: Settings, tool: str, out_dir: Path, workspace: Path | None
) -> list[Path]:
    """Render the methodology for ``tool`` into ``out_dir``; returns the files written."""
    files = render_files(settings, tool, workspace)
    if out_dir.exists() and not out_dir.is_dir():  # host-path: the --out the user named
        raise PromptError(
            f"output {out_dir} exists and is not a directory; pass a directory to --out"
        )
    written = []
    for relative, text in sorted(files.items()):
        target = out_dir / relative
        try:
            out_dir.mkdir(parents=True, exist_ok=True)  # host-path: the --out the user named
            target = contained_target(out_dir, relative)
            write_text_atomic(out_dir, relative, text)
        except OSError as exc:
            raise PromptError(
                f"cannot write {target}: {exc.strerror}; check the --out directory"
            ) from None
        written.append(target)
    return written
