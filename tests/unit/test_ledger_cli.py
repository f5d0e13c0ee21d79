"""`agentic-researcher ledger ...` as a user runs it (typer's CliRunner, a real SQLite ledger)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framework.cli import app
from framework.ledger import open_ledger


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    workspace = tmp_path / "repo"
    workspace.mkdir()
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    with open_ledger(url) as ledger:
        for i in range(4):
            ledger.append(
                "run_submitted",
                run_id=f"r{i}",
                session_id="s1" if i < 2 else "s2",
                payload={
                    "experiment": "prune" if i < 3 else "fw",
                    "argv": ["python", "prune.py", f"--sparsity={i / 10}"],
                    "params": {"sparsity": i / 10},
                    "tags": ["sweep"],
                },
            )
            kind = "run_failed" if i == 2 else "run_finished"
            ledger.append(
                kind,
                run_id=f"r{i}",
                payload={"exit_code": 1 if i == 2 else 0, "metrics": {"ppl": 10.0 + i}},
            )
    return {"workspace": str(workspace), "url": url}


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["ledger", *args, "--workspace", env["workspace"], "--ledger", env["url"]]
    )
    return result.exit_code, result.stdout, result.stderr


def test_list_json_applies_the_filters(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "list", "--experiment", "prune", "--state", "finished", "--json")
    assert code == 0
    assert [r["run_id"] for r in json.loads(out)] == ["r0", "r1"]
    code, out, _ = invoke(
        env, "list", "--session", "s2", "--tag", "sweep", "--since", "1h", "--json"
    )
    assert [r["run_id"] for r in json.loads(out)] == ["r2", "r3"]
    code, out, _ = invoke(env, "list", "--until", "2000-01-01", "--json")
    assert json.loads(out) == []


def test_list_renders_a_table_with_each_run(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "list")
    assert code == 0
    for run_id in ("r0", "r1", "r2", "r3"):
        assert run_id in out
    assert "failed" in out and "ppl=12" in out


def test_list_rejects_an_unreadable_time_and_an_unknown_state(env: dict[str, str]) -> None:
    code, _, err = invoke(env, "list", "--since", "yesterday")
    assert code == 2 and "--since 'yesterday'" in err
    code, _, err = invoke(env, "list", "--state", "done")
    assert code == 2 and "unknown run state 'done'" in err


def test_show_prints_the_run_and_its_events(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "show", "r2", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["run"]["state"] == "failed" and shown["run"]["exit_code"] == 1
    assert [e["kind"] for e in shown["events"]] == ["run_submitted", "run_failed"]
    code, _, err = invoke(env, "show", "r9")
    assert code == 2 and "no run 'r9'" in err


def test_diff_lists_params_argv_and_metrics_that_differ(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "diff", "r0", "r1", "--json")
    assert code == 0
    diffs = {d["field"]: (d["left"], d["right"]) for d in json.loads(out)}
    assert diffs == {
        "argv": (
            ["python", "prune.py", "--sparsity=0.0"],
            ["python", "prune.py", "--sparsity=0.1"],
        ),
        "params.sparsity": (0.0, 0.1),
        "metrics.ppl": (10.0, 11.0),
    }
    code, out, _ = invoke(env, "diff", "r0", "r0")
    assert code == 0 and "do not differ" in out


def test_compare_builds_a_metrics_table_from_ids_or_filters(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "compare", "r3", "r0", "--json")
    assert code == 0
    table = json.loads(out)
    assert table["metrics"] == ["ppl"]
    assert [(r["run_id"], r["ppl"]) for r in table["rows"]] == [("r3", 13.0), ("r0", 10.0)]
    code, out, _ = invoke(env, "compare", "--experiment", "prune")
    assert code == 0 and "r2" in out and "12" in out and "r3" not in out
    code, _, err = invoke(env, "compare")
    assert code == 2 and "name runs to compare" in err


def test_export_csv_and_json_round_trip(env: dict[str, str], tmp_path: Path) -> None:
    code, out, _ = invoke(env, "export", "--format", "csv", "--experiment", "prune")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run_id"] for r in rows] == ["r0", "r1", "r2"]
    assert (
        rows[2]["state"] == "failed"
        and rows[2]["metric.ppl"] == "12.0"
        and rows[1]["param.sparsity"] == "0.1"
    )
    target = tmp_path / "runs.json"
    code, _, _ = invoke(env, "export", "--format", "json", "--out", str(target))
    assert code == 0
    assert [r["run_id"] for r in json.loads(target.read_text())] == ["r0", "r1", "r2", "r3"]
    code, out, _ = invoke(env, "export", "--format", "json", "--events")
    events = json.loads(out)
    assert len(events) == 8 and events[0]["prev_hash"] == "0" * 64


def test_export_parquet_round_trips_when_pyarrow_is_installed(
    env: dict[str, str], tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    target = tmp_path / "runs.parquet"
    code, _, err = invoke(env, "export", "--format", "parquet", "--out", str(target))
    assert code == 0, err
    table = pq.read_table(target).to_pylist()
    assert [(r["run_id"], r["metric.ppl"]) for r in table] == [
        ("r0", 10.0),
        ("r1", 11.0),
        ("r2", 12.0),
        ("r3", 13.0),
    ]


def test_export_parquet_without_pyarrow_says_how_to_get_it(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    target = tmp_path / "runs.parquet"
    code, _, err = invoke(env, "export", "--format", "parquet", "--out", str(target))
    assert code == 2 and "pip install pyarrow" in err
    assert not target.exists()


def test_export_rejects_an_unknown_format(env: dict[str, str]) -> None:
    code, _, err = invoke(env, "export", "--format", "xlsx")
    assert code == 2 and "use csv, json or parquet" in err


def test_verify_exits_zero_on_a_sound_ledger_and_one_naming_the_broken_event(
    env: dict[str, str],
) -> None:
    code, out, _ = invoke(env, "verify")
    assert code == 0 and "ledger ok: 8 events" in out
    conn = sqlite3.connect(env["url"].removeprefix("sqlite://"), isolation_level=None)
    conn.execute("DROP TRIGGER ledger_events_no_update")
    conn.execute("UPDATE ledger_events SET body = replace(body, 'prune', 'prunf') WHERE seq = 5")
    conn.close()
    code, _, err = invoke(env, "verify")
    assert code == 1
    assert "event seq 5: content does not match its hash" in err
    code, out, _ = invoke(env, "verify", "--json")
    assert code == 1 and json.loads(out)["problems"][0]["seq"] == 5


def test_a_bad_ledger_url_is_a_clean_error(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app, ["ledger", "list", "--workspace", env["workspace"], "--ledger", "mysql://db/x"]
    )
    assert result.exit_code == 2
    assert "is not supported" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_default_ledger_lives_in_the_state_dir_outside_the_workspace(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["ledger", "verify", "--workspace", env["workspace"]])
    assert result.exit_code == 0, result.stderr
    created = list((tmp_path / "state").rglob("ledger.sqlite"))
    assert len(created) == 1
    assert Path(env["workspace"]) not in created[0].parents
