"""Settings: one pydantic model, merged from layered sources with provenance.

Precedence (lowest first): built-in defaults < user file
(``$XDG_CONFIG_HOME/agentic-researcher/config.toml``) < workspace file
(``<workspace>/.agentic-researcher/config.toml``) < ``AR_*`` environment < command-line flags.

Each layer is read into a nested dict, merged key by key, and validated once. Because every leaf
remembers the layer that set it, a validation error names the file or variable and the key, and
``config show`` can say where each value came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "AR_"
ENV_NESTED = "__"
# AR_* variables that are not settings: read by the experiments, the container entrypoint or the
# test and CI scripts. Every other AR_* name must be a setting, so a misspelt one is an error.
NON_SETTING_ENV = frozenset(
    {"AR_CACHE_DIR", "AR_LM_CORPUS_DIR", "AR_SESSION_ID", "AR_UID", "AR_GID"}
)
NON_SETTING_ENV_PREFIXES = ("AR_CI_", "AR_TEST_")
WORKSPACE_DIR_NAME = ".agentic-researcher"
CONFIG_FILE_NAME = "config.toml"

AgentTool = Literal["claude", "codex", "gemini", "opencode"]
RuntimeName = Literal["bwrap", "docker", "podman", "apptainer"]
NetworkPolicy = Literal["none", "allowlist", "open"]
ExecutorName = Literal["local", "slurm"]
MethodologyModule = Literal["math", "compute", "multinode"]

DEFAULT_DEFAULT_LAYER = "default"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Mount(_Section):
    """A host path made visible inside the sandbox."""

    source: Path
    target: Path | None = Field(default=None, description="defaults to the source path")
    read_only: bool = True

    @field_validator("source", "target")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"mount paths must be absolute, got {str(value)!r}")
        return value

    @classmethod
    def parse(cls, text: str) -> Mount:
        """Parse ``SRC[:DST][:ro|rw]`` as given on the command line."""
        parts = text.split(":")
        mode = "ro"
        if parts[-1] in ("ro", "rw"):
            mode = parts.pop()
        if not 1 <= len(parts) <= 2 or not parts[0]:
            raise ValueError(f"expected SRC[:DST][:ro|rw], got {text!r}")
        source = Path(parts[0]).expanduser()
        target = Path(parts[1]) if len(parts) == 2 and parts[1] else None
        return cls(source=source, target=target, read_only=mode == "ro")

    @property
    def destination(self) -> Path:
        return self.target or self.source


class AgentSettings(_Section):
    tool: AgentTool = Field(
        default="claude", description="agent CLI: claude, codex, gemini or opencode"
    )
    model: str | None = Field(default=None, description="model name passed to the agent CLI")
    api_key_env: list[str] = Field(
        default_factory=lambda: [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "GOOGLE_GEMINI_BASE_URL",
        ],
        description="names of host variables passed into the sandbox when set (never values in "
        "files); each goes only to the agent that reads it, or to every agent if none does",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="arguments appended to the agent CLI"
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return names


class SandboxSettings(_Section):
    runtime: RuntimeName = Field(
        default="bwrap", description="sandbox runtime: bwrap, docker, podman or apptainer"
    )
    image: str = Field(
        default="agentic-researcher:latest",
        description="container image (docker/podman) or .sif (apptainer)",
    )
    gpus: str = Field(
        default="none", description="'none', 'all', a count like '2', or device ids like '0,1'"
    )
    network: NetworkPolicy = Field(
        default="allowlist",
        description="none (loopback only), allowlist (HTTPS to listed domains via the egress proxy) or open",
    )
    network_allowlist: list[str] = Field(
        default_factory=lambda: [
            "api.anthropic.com",
            "api.openai.com",
            "generativelanguage.googleapis.com",
        ],
        description="domains reachable over HTTPS through the egress proxy when network = 'allowlist'",
    )
    network_ports: list[int] = Field(
        default_factory=lambda: [443],
        description="ports the egress proxy lets through to allowlisted domains (80 for plain HTTP)",
    )
    mounts: list[Mount] = Field(
        default_factory=list,
        description="extra mounts: tables with source, target (optional) and read_only",
    )
    env_allowlist: list[str] = Field(
        default_factory=lambda: ["LANG", "LC_ALL", "TERM", "TZ", "COLORTERM"],
        description="host variables copied into the sandbox when set",
    )
    env: dict[str, str] = Field(default_factory=dict, description="explicit variables set inside")
    pids_limit: int = Field(
        default=4096, ge=16, description="maximum number of processes inside the sandbox"
    )
    memory_gb: float | None = Field(
        default=None, gt=0, description="memory limit in GiB (unset: no limit)"
    )
    cpus: float | None = Field(default=None, gt=0, description="CPU limit (unset: no limit)")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: str) -> str:
        value = str(value).strip()
        if value in ("none", "all"):
            return value
        if re.fullmatch(r"\d+", value):
            return value
        if re.fullmatch(r"\d+(,\d+)*", value):
            return value
        if re.fullmatch(r"-\d+", value):
            raise ValueError(f"GPU count must not be negative, got {value}")
        raise ValueError(
            f"expected 'none', 'all', a count or a list of device ids like '0,1', got {value!r}"
        )

    @field_validator("network_ports")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        for port in ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a TCP port (1-65535)")
        return sorted(set(ports))

    @field_validator("network_allowlist")
    @classmethod
    def _domains(cls, domains: list[str]) -> list[str]:
        for domain in domains:
            if not re.fullmatch(r"(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", domain):
                raise ValueError(f"{domain!r} is not a domain name")
        return [d.lower() for d in domains]


class ClusterSettings(_Section):
    executor: ExecutorName = Field(
        default="local", description="where remote-run jobs go: local or slurm"
    )
    partition: str | None = Field(default=None, description="Slurm partition")
    account: str | None = Field(default=None, description="Slurm account")
    qos: str | None = Field(default=None, description="Slurm QoS")
    time_minutes: int = Field(
        default=60, gt=0, description="default time limit of a job in minutes"
    )
    gpus_per_node: int = Field(default=0, ge=0, description="GPUs per cluster node")
    cpus_per_task: int = Field(default=1, ge=1, description="default CPUs per task")
    max_nodes: int = Field(
        default=1, ge=1, description="largest number of nodes one job may ask for"
    )
    max_array: int = Field(
        default=1000, ge=1, description="largest job array one request may submit"
    )
    job_sandbox: Literal["required", "off"] = Field(
        default="required",
        description="run each remote-run job in a bwrap sandbox on its node, from a read-only "
        "snapshot of the workspace (required: a node without bwrap fails the run), or off "
        "(jobs run unsandboxed as the broker's user; only for trusted code)",
    )
    job_runtime: Literal["bwrap", "docker"] = Field(
        default="bwrap",
        description="what sandboxes each job on its node when job_sandbox is required: bwrap, or "
        "docker (a container of sandbox.image with the protections of a Docker session; the "
        "node needs the docker CLI and engine)",
    )
    job_pids: int = Field(
        default=1024,
        ge=16,
        description="most processes and threads one task of a job may have at once (its cgroup's "
        "pids.max; Docker's --pids-limit)",
    )
    job_memory_gb: float | None = Field(
        default=16.0,
        gt=0,
        description="memory limit of one task of a job in GiB when the request names none "
        "(resources.mem_gb, per node, is shared by its tasks); unset: no limit",
    )
    max_in_flight: int = Field(
        default=2000,
        ge=1,
        description="most runs of this broker queued or running at once; a submit past it is refused",
    )
    local_devices: list[str] = Field(
        default_factory=list, description="GPU ids the local executor schedules onto"
    )
    local_workers: int = Field(
        default=0,
        ge=0,
        description="concurrent CPU-only jobs for the local executor (0 = number of CPUs)",
    )


class LedgerSettings(_Section):
    url: str | None = Field(
        default=None,
        description="sqlite:///path[?sync=normal|full] or postgresql://...; default: ledger.sqlite in the state dir",
    )


class ResearchSettings(_Section):
    time_budget_hours: float = Field(
        default=24.0, gt=0, description="wall-clock budget of a session, stated to the agent"
    )
    gpu_hours_budget: float | None = Field(
        default=None, ge=0, description="GPU-hour budget stated to the agent (unset: none)"
    )
    protected_paths: list[str] = Field(
        default_factory=lambda: [
            "eval/",
            "tests/data/",
            ".git/hooks/",
            ".git/config",
            ".agentic-researcher/",
        ],
        description="workspace-relative paths mounted read-only and checked by the audit",
    )
    modules: list[MethodologyModule] = Field(
        default_factory=lambda: list[MethodologyModule](["compute"]),
        description="methodology modules rendered in addition to the core rules",
    )
    package_manager: Literal["uv", "pip"] = Field(
        default="uv", description="what the research repo uses; the audit flags the other one"
    )

    @field_validator("protected_paths")
    @classmethod
    def _relative(cls, paths: list[str]) -> list[str]:
        for p in paths:
            if p.startswith("/") or ".." in Path(p).parts:
                raise ValueError(
                    f"protected paths are relative to the workspace and stay inside it, got {p!r}"
                )
        return paths


class Settings(BaseSettings):
    """All settings. Built by :func:`load_settings`, which does the layering."""

    model_config = SettingsConfigDict(extra="forbid", validate_assignment=True)

    agent: AgentSettings = Field(default_factory=AgentSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    research: ResearchSettings = Field(default_factory=ResearchSettings)
    state_dir: Path | None = Field(
        default=None,
        description="host directory for ledger, sessions and agent state; default under $XDG_STATE_HOME",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Layering (with provenance) is done by load_settings; the model only validates.
        return (init_settings,)

    @model_validator(mode="after")
    def _state_dir_absolute(self) -> Settings:
        if self.state_dir is not None and not self.state_dir.is_absolute():
            raise ValueError("state_dir must be an absolute path")
        return self


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the source and key."""


@dataclass
class Layer:
    name: str
    data: dict[str, Any]


@dataclass
class LoadedSettings:
    settings: Settings
    provenance: dict[str, str] = field(default_factory=dict)
    workspace: Path | None = None

    def source_of(self, dotted_key: str) -> str:
        """The layer that set ``dotted_key`` (or one of its parents), else 'default'."""
        key = dotted_key
        while key:
            if key in self.provenance:
                return self.provenance[key]
            key = key.rpartition(".")[0]
        return DEFAULT_DEFAULT_LAYER


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "agentic-researcher" / CONFIG_FILE_NAME


def workspace_config_path(workspace: Path) -> Path:
    return workspace / WORKSPACE_DIR_NAME / CONFIG_FILE_NAME


def default_state_dir(workspace: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """Per-project state outside the workspace, so the sandbox (which mounts the workspace) cannot reach it."""
    env = os.environ if environ is None else environ
    base = Path(
        env.get("XDG_STATE_HOME") or Path(env.get("HOME", str(Path.home()))) / ".local" / "state"
    )
    root = base / "agentic-researcher"
    if workspace is None:
        return root / "default"
    resolved = workspace.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    return root / "projects" / f"{resolved.name}-{digest}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc


def _known_key_paths() -> dict[tuple[str, ...], Any]:
    """Map each (section, key) path of Settings to its annotation, for env parsing."""
    paths: dict[tuple[str, ...], Any] = {}
    for name, fld in Settings.model_fields.items():
        ann = fld.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for sub, subfld in ann.model_fields.items():
                paths[(name, sub)] = subfld.annotation
            paths[(name,)] = ann
        else:
            paths[(name,)] = ann
    return paths


def _parse_env_value(raw: str, annotation: Any) -> Any:
    """Env values are strings; lists and dicts may be JSON, lists also comma-separated."""
    text = raw.strip()
    origin = getattr(annotation, "__origin__", None)
    if origin in (list, dict) or (
        isinstance(annotation, type) and issubclass(annotation, BaseModel)
    ):
        if text.startswith(("[", "{")):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON: {exc.msg}") from exc
        if origin is list:
            return [item.strip() for item in text.split(",") if item.strip()]
    return raw


def env_layer(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read ``AR_SECTION__KEY`` variables. Unknown ``AR_`` names are errors, not silently ignored."""
    env = os.environ if environ is None else environ
    known = _known_key_paths()
    data: dict[str, Any] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in NON_SETTING_ENV:
            continue
        if name.startswith(NON_SETTING_ENV_PREFIXES):
            continue
        parts = tuple(p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_NESTED))
        if parts not in known:
            raise ConfigError(
                f"environment variable {name}: unknown setting {'.'.join(parts)!r}; "
                f"use AR_<SECTION>__<KEY>, e.g. AR_SANDBOX__RUNTIME (see `agentic-researcher config show`)"
            )
        try:
            value = _parse_env_value(raw, known[parts])
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}: {exc}") from exc
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and key not in ("env",):
            flat[dotted] = value
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) and key != "env":
            _merge(base[key], value)
        else:
            base[key] = value


def _error_message(exc: ValidationError, provenance: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        key = ".".join(loc) or "(top level)"
        where = DEFAULT_DEFAULT_LAYER
        probe = key
        while probe:
            if probe in provenance:
                where = provenance[probe]
                break
            probe = probe.rpartition(".")[0]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `agentic-researcher config show` lists valid keys)"
        lines.append(f"{where}: {key}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(
    workspace: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    user_file: Path | None = None,
) -> LoadedSettings:
    """Merge every layer and validate once. Raises :class:`ConfigError` with an actionable message."""
    layers: list[Layer] = []
    ufile = user_file or user_config_path(environ)
    if ufile.is_file():
        layers.append(Layer(str(ufile), _read_toml(ufile)))
    if workspace is not None:
        wfile = workspace_config_path(workspace)
        if wfile.is_file():
            layers.append(Layer(str(wfile), _read_toml(wfile)))
    layers.append(Layer("environment (AR_*)", env_layer(environ)))
    if flags:
        layers.append(Layer("command line", dict(flags)))

    merged: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    for layer in layers:
        _merge(merged, layer.data)
        for dotted in _flatten(layer.data):
            name = layer.name
            if layer.name.startswith("environment"):
                name = f"env {ENV_PREFIX}{dotted.upper().replace('.', ENV_NESTED)}"
            provenance[dotted] = name
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_error_message(exc, provenance)) from None
    if settings.state_dir is None:
        settings.state_dir = default_state_dir(workspace, environ)
    return LoadedSettings(settings=settings, provenance=provenance, workspace=workspace)


def describe(loaded: LoadedSettings) -> list[tuple[str, Any, str]]:
    """Rows of (dotted key, value, source) for every leaf setting, in model order."""
    rows: list[tuple[str, Any, str]] = []
    dumped = loaded.settings.model_dump(mode="json")
    for section, value in dumped.items():
        if isinstance(value, dict):
            for key, leaf in value.items():
                dotted = f"{section}.{key}"
                rows.append((dotted, leaf, loaded.source_of(dotted)))
        else:
            source = loaded.source_of(section)
            if section == "state_dir" and source == DEFAULT_DEFAULT_LAYER:
                source = "default (derived from the workspace path)"
            rows.append((section, value, source))
    return rows


def commented_template() -> str:
    """A config.toml with every setting commented out at its default, described from the model."""
    lines = [
        "# agentic-researcher configuration.",
        "# Precedence: defaults < ~/.config/agentic-researcher/config.toml"
        " < <workspace>/.agentic-researcher/config.toml",
        "#             < AR_<SECTION>__<KEY> environment variables < command-line flags.",
        "# Uncomment a line to change it. `agentic-researcher config show` prints the merged result.",
        "",
    ]
    defaults = Settings().model_dump(mode="json")
    sections: list[tuple[str, type[BaseModel]]] = []
    for name, fld in Settings.model_fields.items():
        ann = fld.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sections.append((name, ann))
            continue
        if fld.description:
            lines.append(f"# {fld.description}")
        lines += [f"# {name} = {_toml_value(defaults[name])}", ""]
    for name, model in sections:
        lines.append(f"[{name}]")
        for key, subfld in model.model_fields.items():
            if subfld.description:
                lines.append(f"# {subfld.description}")
            lines.append(f"# {key} = {_toml_value(defaults[name][key])}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _toml_value(value: Any) -> str:
    if value is None:
        return '""  # unset'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)
