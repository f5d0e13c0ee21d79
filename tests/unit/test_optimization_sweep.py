"""Sweep definitions expand into validated train argv's; bad configs fail before any job runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.optimization.__main__ import main
from experiments.optimization.sweep import collect, expand_sweep

GRID = """
name: demo
mode: grid
fixed: {size: tiny, steps: 20, seq_len: 32}
search:
  optimizer: [adamw, sgd]
  schedule: [constant, cosine, wsd]
  lr: [0.001, 0.01]
"""

RANDOM = """
name: demo-random
mode: random
samples: 6
seed: 3
fixed: {size: tiny, steps: 20}
search:
  optimizer: [adamw, sgd]
  lr: {low: 1.0e-4, high: 1.0e-1, log: true}
  batch_size: {low: 4, high: 32, integer: true}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def options(argv: list[str]) -> dict[str, str]:
    assert argv[:4] == ["python", "-m", "experiments.optimization", "train"]
    flags = argv[4:]
    return {flags[i].removeprefix("--"): flags[i + 1] for i in range(0, len(flags), 2)}


def test_grid_expands_to_every_combination_with_distinct_run_dirs(tmp_path: Path) -> None:
    argvs = expand_sweep(write(tmp_path, GRID), out_root=tmp_path / "runs")
    assert len(argvs) == 2 * 3 * 2
    combos = {(o["optimizer"], o["schedule"], o["lr"]) for o in map(options, argvs)}
    assert len(combos) == 12
    outs = [options(a)["out"] for a in argvs]
    assert len(set(outs)) == 12
    assert all(out.startswith(str(tmp_path / "runs" / "demo")) for out in outs)
    assert all(options(a)["steps"] == "20" for a in argvs)


def test_random_sweep_is_reproducible_from_its_seed_and_respects_ranges(tmp_path: Path) -> None:
    path = write(tmp_path, RANDOM)
    first, second = expand_sweep(path), expand_sweep(path)
    assert first == second and len(first) == 6
    drawn = [options(a) for a in first]
    assert all(1e-4 <= float(o["lr"]) <= 1e-1 for o in drawn)
    assert all(4 <= int(o["batch-size"]) <= 32 for o in drawn)
    assert len({o["lr"] for o in drawn}) == 6
    reseeded = expand_sweep(write(tmp_path, RANDOM.replace("seed: 3", "seed: 4")))
    assert reseeded != first


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GRID.replace("optimizer:", "optimiser:"), "unknown training option 'optimiser'"),
        (GRID.replace("[adamw, sgd]", "[adamw, lion]"), "unknown optimizer 'lion'"),
        (GRID.replace("[0.001, 0.01]", "[0.001, -1]"), "lr"),
        (GRID.replace("[constant, cosine, wsd]", "[constant, linear]"), "schedule"),
        (RANDOM.replace("samples: 6\n", ""), "needs `samples`"),
        (GRID.replace("lr: [0.001, 0.01]", "lr: {low: 0.1, high: 0.2}"), "grid mode needs lists"),
        (RANDOM.replace("low: 1.0e-4", "low: 0"), "log range needs low > 0"),
        ("just text", "must be a mapping"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_bad_sweep_configs_fail_with_a_message_naming_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("`", "`")):
        expand_sweep(write(tmp_path, text))


def test_sweep_cli_prints_json_argv_lines_and_reports_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", str(write(tmp_path, GRID)), "--print-argv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12 and json.loads(lines[0])[3] == "train"
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_collect_ranks_runs_and_writes_table_and_plot(tmp_path: Path) -> None:
    def fake(optimizer: str, lr: float, loss: float) -> dict:  # type: ignore[type-arg]
        config = {
            "optimizer": optimizer,
            "schedule": "cosine",
            "lr": lr,
            "weight_decay": 0.1,
            "batch_size": 16,
        }
        return {
            "config": config,
            "final_val_loss": loss,
            "diverged": False,
            "seconds": 1.0,
            "val_loss": [[10, loss + 1], [20, loss]],
        }

    run_dir = tmp_path / "run0"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(fake("sgd", 0.1, 5.0)))
    rows, plot = collect(
        [run_dir, fake("adamw", 0.01, 4.0), fake("adamw", 0.001, 4.5)], out=tmp_path / "summary"
    )  # type: ignore[list-item]
    assert [r["final_val_loss"] for r in rows] == [4.0, 4.5, 5.0]
    assert plot is not None and plot.stat().st_size > 10_000
    assert "| adamw | cosine | 0.01 |" in (tmp_path / "summary" / "sweep_table.md").read_text()
    with pytest.raises(ValueError, match="did that run finish"):
        collect([tmp_path / "nowhere"])


TINY = """
name: tiny-sweep
mode: grid
fixed: {size: tiny, steps: 6}
search:
  schedule: [constant, cosine]
"""


def test_every_array_task_runs_the_same_argv_with_the_index_substituted_by_the_dispatcher(
    tmp_path: Path,
) -> None:
    from experiments.optimization.dispatch import task_argv

    argv = task_argv(tmp_path / "s.yaml", "/venv/bin/python")
    assert argv == [
        "/venv/bin/python",
        "-m",
        "experiments.optimization",
        "sweep",
        str(tmp_path / "s.yaml"),
        "--task",
        "{index}",
    ]


def test_task_mode_rejects_an_index_outside_the_sweep_and_a_missing_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(write(tmp_path, TINY))
    assert main(["sweep", config, "--task", "2", "--out", str(tmp_path / "r")]) == 2
    assert "--task 2 is out of range" in capsys.readouterr().err
    monkeypatch.delenv("RUN_DIR", raising=False)
    assert main(["sweep", config, "--task", "0"]) == 2
    assert "RUN_DIR" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_submit_validates_the_config_and_needs_a_broker_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REMOTE_RUN_SOCKET", raising=False)
    assert main(["sweep", str(write(tmp_path, TINY)), "--submit"]) == 2
    assert "REMOTE_RUN_SOCKET" in capsys.readouterr().err
    bad = write(tmp_path, TINY.replace("constant", "sideways"))
    assert main(["sweep", str(bad), "--submit", "--socket", str(tmp_path / "no.sock")]) == 2
    assert "sideways" in capsys.readouterr().err


def test_collect_reads_metrics_from_the_ledger_and_falls_back_to_the_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from framework.ledger import EventKind, NewEvent, open_ledger

    def metrics(index: int, loss: float) -> dict:  # type: ignore[type-arg]
        config = {
            "optimizer": "adamw",
            "schedule": ["constant", "cosine"][index],
            "lr": 0.003,
            "weight_decay": 0.1,
            "batch_size": 16,
        }
        return {
            "config": config,
            "final_val_loss": loss,
            "diverged": False,
            "seconds": 2.0,
            "val_loss": [[3, loss + 0.5], [6, loss]],
            "sweep": {"name": "tiny-sweep", "index": index, "runs": 2},
        }

    run_dir = tmp_path / "runs" / "g1.1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics(1, 5.5)))
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with open_ledger(url) as ledger:
        events = []
        for run_id, index in (("g1.0", 0), ("g1.1", 1), ("g2.0", 0)):
            submitted = {"experiment": "tiny-sweep", "array_index": index, "run_dir": str(run_dir)}
            events.append(NewEvent(EventKind.run_submitted, run_id, None, submitted))
        events.append(NewEvent(EventKind.run_finished, "g1.0", None, {"metrics": metrics(0, 5.0)}))
        events.append(NewEvent(EventKind.run_finished, "g1.1", None, {"metrics": {"loss": 1}}))
        events.append(NewEvent(EventKind.run_failed, "g2.0", None, {"reason": "exit 1"}))
        ledger.append_many(events)

    out = tmp_path / "table"
    config = str(write(tmp_path, TINY))
    assert (
        main(["sweep", config, "--collect", "--ledger", url, "--group", "g1", "--out", str(out)])
        == 0
    )
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    rows = json.loads((out / "sweep_summary.json").read_text())
    assert [(r["schedule"], r["final_val_loss"]) for r in rows] == [
        ("constant", 5.0),
        ("cosine", 5.5),
    ]

    # all submissions: the failed run is reported by id, and the sweep has no missing index
    assert main(["sweep", config, "--collect", "--ledger", url, "--out", str(out)]) == 0
    assert "g2.0: failed (exit 1)" in capsys.readouterr().err
    assert main(["sweep", config, "--collect"]) == 2
    assert "--ledger URL" in capsys.readouterr().err
