"""Settings layering, provenance and the error paths of configuration."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framework.cli import app
from framework.config import (
    ConfigError,
    Mount,
    commented_template,
    default_state_dir,
    describe,
    load_settings,
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with its own XDG dirs, so the developer's real config never leaks in."""
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def user_file(env: dict[str, str], text: str) -> Path:
    return write(Path(env["XDG_CONFIG_HOME"]) / "agentic-researcher" / "config.toml", text)


def workspace_file(ws: Path, text: str) -> Path:
    return write(ws / ".agentic-researcher" / "config.toml", text)


def test_defaults_apply_when_no_source_sets_a_value(tmp_path: Path, env: dict[str, str]) -> None:
    loaded = load_settings(workspace=tmp_path, environ=env)
    assert loaded.settings.sandbox.runtime == "bwrap"
    assert loaded.settings.cluster.executor == "local"
    assert loaded.source_of("sandbox.runtime") == "default"


def test_each_layer_overrides_the_one_below(tmp_path: Path, env: dict[str, str]) -> None:
    ufile = user_file(
        env, '[sandbox]\nruntime = "docker"\nimage = "u"\ngpus = "1"\n[agent]\nmodel = "m-user"\n'
    )
    wfile = workspace_file(
        tmp_path, '[sandbox]\nimage = "w"\ngpus = "2"\n[cluster]\npartition = "p"\n'
    )
    env = env | {"AR_SANDBOX__GPUS": "3", "AR_CLUSTER__PARTITION": "gpu"}
    loaded = load_settings(
        workspace=tmp_path, environ=env, flags={"cluster": {"partition": "flagged"}}
    )
    s = loaded.settings
    assert (s.sandbox.runtime, s.sandbox.image, s.sandbox.gpus) == ("docker", "w", "3")
    assert s.cluster.partition == "flagged"
    assert s.agent.model == "m-user"
    assert loaded.source_of("sandbox.runtime") == str(ufile)
    assert loaded.source_of("sandbox.image") == str(wfile)
    assert loaded.source_of("sandbox.gpus") == "env AR_SANDBOX__GPUS"
    assert loaded.source_of("cluster.partition") == "command line"


def test_xdg_config_home_is_honoured_and_home_is_the_fallback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(home / ".config" / "agentic-researcher" / "config.toml", '[agent]\ntool = "codex"\n')
    assert load_settings(environ={"HOME": str(home)}).settings.agent.tool == "codex"
    xdg = tmp_path / "xdg"
    write(xdg / "agentic-researcher" / "config.toml", '[agent]\ntool = "gemini"\n')
    loaded = load_settings(environ={"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)})
    assert loaded.settings.agent.tool == "gemini"


def test_env_lists_accept_json_and_commas(tmp_path: Path, env: dict[str, str]) -> None:
    env = env | {
        "AR_SANDBOX__NETWORK_ALLOWLIST": "a.example, b.example",
        "AR_RESEARCH__PROTECTED_PATHS": '["eval/", "data/test/"]',
    }
    s = load_settings(workspace=tmp_path, environ=env).settings
    assert s.sandbox.network_allowlist == ["a.example", "b.example"]
    assert s.research.protected_paths == ["eval/", "data/test/"]


def test_unknown_key_in_workspace_file_names_file_and_key(
    tmp_path: Path, env: dict[str, str]
) -> None:
    wfile = workspace_file(tmp_path, "[sandbox]\nruntim = 'docker'\n")
    with pytest.raises(ConfigError) as err:
        load_settings(workspace=tmp_path, environ=env)
    assert str(wfile) in str(err.value)
    assert "sandbox.runtim" in str(err.value)
    assert "unknown key" in str(err.value)


def test_unknown_section_in_user_file_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    ufile = user_file(env, "[sandbx]\nruntime = 'docker'\n")
    with pytest.raises(ConfigError, match="sandbx") as err:
        load_settings(workspace=tmp_path, environ=env)
    assert str(ufile) in str(err.value)


def test_unknown_runtime_names_the_variable(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(workspace=tmp_path, environ=env | {"AR_SANDBOX__RUNTIME": "lxc"})
    assert "AR_SANDBOX__RUNTIME" in str(err.value)
    assert "bwrap" in str(err.value)


def test_unknown_ar_variable_is_an_error_not_ignored(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="AR_SANDBOX__RUNTIM"):
        load_settings(workspace=tmp_path, environ=env | {"AR_SANDBOX__RUNTIM": "docker"})


@pytest.mark.parametrize("field", ["cluster.gpus_per_node", "sandbox.gpus"])
def test_negative_gpu_counts_are_rejected(tmp_path: Path, env: dict[str, str], field: str) -> None:
    section, key = field.split(".")
    value = "-1" if key == "gpus" else -1
    text = f"[{section}]\n{key} = {value!r}\n".replace("'", '"')
    wfile = workspace_file(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(workspace=tmp_path, environ=env)
    assert str(wfile) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[[sandbox.mounts]]\nsource = "relative/dir"\n', "sandbox.mounts"),
        ('state_dir = "not/absolute"\n', "state_dir"),
        ('[research]\nprotected_paths = ["../outside"]\n', "research.protected_paths"),
        ('[research]\nprotected_paths = ["/etc"]\n', "research.protected_paths"),
    ],
)
def test_bad_paths_are_rejected_with_the_key(
    tmp_path: Path, env: dict[str, str], toml: str, key: str
) -> None:
    workspace_file(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        load_settings(workspace=tmp_path, environ=env)
    assert key in str(err.value)


def test_invalid_toml_names_the_file(tmp_path: Path, env: dict[str, str]) -> None:
    wfile = workspace_file(tmp_path, "[sandbox\n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_settings(workspace=tmp_path, environ=env)
    assert str(wfile) in str(err.value)


def test_bad_json_in_env_list_names_the_variable(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="AR_SANDBOX__NETWORK_ALLOWLIST"):
        load_settings(workspace=tmp_path, environ=env | {"AR_SANDBOX__NETWORK_ALLOWLIST": "[oops"})


def test_state_dir_defaults_outside_the_workspace(tmp_path: Path, env: dict[str, str]) -> None:
    ws = tmp_path / "repo"
    ws.mkdir()
    state = load_settings(workspace=ws, environ=env).settings.state_dir
    assert state is not None
    assert ws.resolve() not in state.resolve().parents
    assert state == default_state_dir(ws, env)
    other = tmp_path / "other" / "repo"
    other.mkdir(parents=True)
    assert default_state_dir(other, env) != state, "two repos of the same name must not share state"


def test_mount_parses_cli_syntax() -> None:
    assert Mount.parse("/data") == Mount(source=Path("/data"), read_only=True)
    assert Mount.parse("/data:/mnt/d:rw") == Mount(
        source=Path("/data"), target=Path("/mnt/d"), read_only=False
    )
    assert Mount.parse("/data:rw").read_only is False
    with pytest.raises(ValueError, match="SRC"):
        Mount.parse(":rw")


def test_commented_template_is_valid_toml_and_loads_to_defaults(
    tmp_path: Path, env: dict[str, str]
) -> None:
    text = commented_template()
    assert all(v == {} for v in tomllib.loads(text).values()), "every setting is commented out"
    for key, _value, _source in describe(load_settings(environ=env)):
        assert f"# {key.rpartition('.')[2]} = " in text, f"{key} missing from the template"
    uncommented = "\n".join(
        line[2:] if re.match(r"# [a-z_]+ = ", line) and "unset" not in line else line
        for line in text.splitlines()
    )
    workspace_file(tmp_path, uncommented)
    loaded = load_settings(workspace=tmp_path, environ=env)
    assert loaded.settings.sandbox.runtime == "bwrap"


runner = CliRunner()


def test_config_show_reports_sources(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AR_AGENT__TOOL", "codex")
    workspace_file(tmp_path, '[sandbox]\nruntime = "docker"\n')
    result = runner.invoke(app, ["config", "show", "--json", "-w", str(tmp_path)])
    assert result.exit_code == 0, result.output
    import json

    rows = {r["key"]: r for r in json.loads(result.output)}
    assert rows["agent.tool"] == {
        "key": "agent.tool",
        "value": "codex",
        "source": "env AR_AGENT__TOOL",
    }
    assert rows["sandbox.runtime"]["source"].endswith(".agentic-researcher/config.toml")


def test_config_show_exits_non_zero_with_one_clear_message(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AR_CLUSTER__GPUS_PER_NODE", "-2")
    result = runner.invoke(app, ["config", "show", "-w", str(tmp_path)])
    assert result.exit_code == 2
    assert "AR_CLUSTER__GPUS_PER_NODE" in result.output
    assert "Traceback" not in result.output


def test_config_init_writes_once_and_refuses_to_overwrite(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / ".git").mkdir()
    first = runner.invoke(app, ["config", "init", "-w", str(tmp_path)])
    assert first.exit_code == 0, first.output
    path = tmp_path / ".agentic-researcher" / "config.toml"
    path.write_text(path.read_text() + "\n# my edit\n")
    second = runner.invoke(app, ["config", "init", "-w", str(tmp_path)])
    assert second.exit_code == 2 and "--force" in second.output
    assert path.read_text().endswith("# my edit\n"), "the user's file must be untouched"
    third = runner.invoke(app, ["config", "init", "--user"])
    assert third.exit_code == 0
    assert (Path(env["XDG_CONFIG_HOME"]) / "agentic-researcher" / "config.toml").is_file()


def test_configuration_doc_lists_every_setting() -> None:
    from tests.support import REPO_ROOT

    doc = (REPO_ROOT / "docs" / "configuration.md").read_text()
    for key, _value, _source in describe(load_settings(environ={"HOME": "/nonexistent"})):
        assert f"`{key}`" in doc, f"docs/configuration.md does not document {key}"


def test_documented_non_setting_ar_variables_are_not_errors(
    tmp_path: Path, env: dict[str, str]
) -> None:
    extra = {"AR_CACHE_DIR": "/tmp/c", "AR_LM_CORPUS_DIR": "/tmp/l", "AR_TEST_POSTGRES_URL": "x"}
    assert (
        load_settings(workspace=tmp_path, environ=env | extra).settings.sandbox.runtime == "bwrap"
    )
    with pytest.raises(ConfigError, match="AR_CACHE_DIRS"):
        load_settings(workspace=tmp_path, environ=env | {"AR_CACHE_DIRS": "/tmp/c"})
